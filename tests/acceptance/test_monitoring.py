"""`celery inspect` and Flower see workers and tasks in every migration mode (their control and
event messages travel on the PostgreSQL queue whatever the mode)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, ModeSetting, free_port, process_env, wait_for
from tests.helpers import submit, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_celery_inspect_ping_reaches_the_worker(
    live_db_url: str, start_worker: Any, tmp_path: Path, migration_mode: ModeSetting
) -> None:
    start_worker("inspected", **migration_mode.env)
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "helixagent", "inspect", "ping", "--timeout", "5"],
        cwd=ROOT,
        env=process_env(live_db_url, tmp_path, **migration_mode.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "inspected@" in result.stdout and "pong" in result.stdout, result.stdout + result.stderr


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_flower_shows_the_worker_and_its_tasks(
    api: Any, live_db_url: str, start_worker: Any, tmp_path: Path, migration_mode: ModeSetting
) -> None:
    port = free_port()
    env = process_env(live_db_url, tmp_path, FLOWER_UNAUTHENTICATED_API="true", **migration_mode.env)
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "helixagent", "flower", "--address=127.0.0.1", f"--port={port}"],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "flower.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthcheck"), 30, what="flower up")
        start_worker("watched", **migration_mode.env)
        workers = wait_for(lambda: get_json(f"http://127.0.0.1:{port}/api/workers?refresh=1"), 30, what="workers")
        assert any(name.startswith("watched@") for name in workers), workers
        # Workers start with task events off (Celery's default); Flower switches them on in every
        # worker it sees within its 5 s interval, and the tasks run from then on show up.
        submitted: list[str] = []

        def succeeded_in_flower() -> bool:
            submitted.append(submit(api, "echo", {"seen": True}))
            wait_status(submitted[-1], "completed")
            tasks = get_json(f"http://127.0.0.1:{port}/api/tasks") or {}
            return any(tasks.get(task_id, {}).get("state") == "SUCCESS" for task_id in submitted)

        wait_for(succeeded_in_flower, 30, 0.5, what="a task in flower")
    finally:
        flower.terminate()
        flower.wait(20)
