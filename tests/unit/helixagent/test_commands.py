"""Management commands with the database unreachable: one line and exit status 69, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port


@pytest.mark.parametrize(
    "command", [["migration", "status"], ["migration", "mode", "dual_write"], ["create_token", "ops"]]
)
def test_an_unreachable_database_is_one_line_and_exit_status_69(command: list[str]) -> None:
    env = {**os.environ, "DATABASE_URL": f"postgresql://helixagent:helixagent@127.0.0.1:{free_port()}/helixagent"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == os.EX_UNAVAILABLE, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("CommandError: database unavailable: connection failed")
