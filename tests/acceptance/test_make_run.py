"""`make run`'s script on the embedded default: no service, SQLite, API + worker + Flower."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port, wait_for


def call(url: str, token: str | None = None, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def test_run_script_serves_tasks_on_sqlite_with_flower(tmp_path: Path) -> None:
    api_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        HELIX_API_PORT=str(api_port),
        HELIX_FLOWER_PORT=str(flower_port),
        HELIX_VAR_DIR=str(tmp_path / "var"),
        HELIX_LOG_DIR=str(tmp_path / "logs"),
    )
    output = tmp_path / "run.out"
    process = subprocess.Popen(
        ["scripts/run.sh"], cwd=ROOT, env=env, stdout=output.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        banner = wait_for(
            lambda: "HelixAgent is running" in output.read_text() and output.read_text(), 90, what="banner"
        )
        assert "SQLite (embedded), legacy mode" in banner
        token = re.search(r"Bearer (hx_[\w-]+)", banner)
        assert token, banner
        accepted = call(f"http://127.0.0.1:{api_port}/v1/tasks", token[1], {"task_type": "echo", "payload": {"n": 1}})
        assert accepted and accepted["status"] in ("pending", "queued"), accepted
        url = f"http://127.0.0.1:{api_port}/v1/tasks/{accepted['id']}/status"
        wait_for(lambda: (call(url, token[1]) or {}).get("status") == "completed", 60, what="completed task")
        workers = wait_for(lambda: call(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1"), 60, what="flower")
        assert any(name.startswith("worker@") for name in workers), workers
        # its worker sends task events from the start (`-E`): a task run now shows up in Flower
        watched = call(f"http://127.0.0.1:{api_port}/v1/tasks", token[1], {"task_type": "noop"})
        assert watched, "the second task was not accepted"

        def state_in_flower() -> Any:
            return ((call(f"http://127.0.0.1:{flower_port}/api/tasks") or {}).get(watched["id"]) or {}).get("state")

        wait_for(lambda: state_in_flower() == "SUCCESS", 60, what="the task's success in flower")
        assert (tmp_path / "var" / "helixagent.sqlite3").exists()
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # a slow stop under load must not leave processes behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
