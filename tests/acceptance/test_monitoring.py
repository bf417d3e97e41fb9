"""`celery inspect` and Flower see workers and tasks in every migration mode (their control and
event messages travel on the PostgreSQL queue whatever the mode), and a task revoked through
Celery ends ``cancelled``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from migration.models import QueueMessage
from tests.conftest import ROOT, ModeSetting, free_port, process_env, purge_rabbitmq, wait_for
from tests.helpers import celery, event_path, submit, wait_completed, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_celery_inspect_ping_reaches_the_worker(
    live_db_url: str, start_worker: Any, tmp_path: Path, migration_mode: ModeSetting
) -> None:
    start_worker("inspected", **migration_mode.env)
    output = celery(live_db_url, tmp_path, "inspect", "ping", "--timeout", "5", **migration_mode.env)
    assert "inspected@" in output and "pong" in output, output


@pytest.mark.parametrize(
    "setting", [ModeSetting("legacy"), ModeSetting("messaging", broker="rabbitmq")], ids=lambda value: value.id
)
def test_a_prefork_worker_whose_processes_are_all_busy_answers_remote_control(
    api: Any, live_db_url: str, start_worker: Any, switch_mode: Any, tmp_path: Path, setting: ModeSetting
) -> None:
    """A task handed to a full prefork pool used to hold the worker's consuming loop, which also
    serves remote control, until a process was free: a liveness probe (``celery inspect ping``)
    or Flower took a busy worker for a dead one."""
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("busy", pool="prefork", concurrency=2, **setting.env)
    running = [submit(api, "sleep", {"seconds": 10}) for _ in range(2)]
    for task_id in running:
        wait_status(task_id, "running", timeout=30)
    waiting = [submit(api, "noop") for _ in range(3)]
    time.sleep(2)  # the worker is woken by each of them within milliseconds
    output = celery(live_db_url, tmp_path, "inspect", "ping", "--timeout", "5", **setting.env)
    assert "busy@" in output and "pong" in output, output
    wait_completed(running + waiting, timeout=30)


def test_tasks_revoked_or_terminated_through_celery_end_cancelled(
    api: Any, live_db_url: str, start_worker: Any, tmp_path: Path
) -> None:
    """What Flower's Revoke and Terminate buttons send. The worker that receives a revoked task
    acknowledges its message without running it: the task must not wait as ``queued`` for good."""
    start_worker("w1", pool="prefork", concurrency=1)
    busy = submit(api, "sleep", {"seconds": 8})
    wait_status(busy, "running", timeout=30)
    ahead = [submit(api, "noop") for _ in range(8)]  # more than the worker's prefetch window holds
    revoked = submit(api, "noop")

    def not_received() -> bool:  # its message not leased by the worker
        return QueueMessage.objects.filter(message_id=revoked, visible_at__lte=time.time()).exists()

    assert not_received()
    assert "flagged as revoked" in celery(live_db_url, tmp_path, "control", "revoke", revoked)
    assert not_received(), "the worker received the task before the revocation reached it"
    assert wait_status(revoked, "cancelled", "completed", timeout=30).status == "cancelled"
    assert event_path(revoked) == ["pending", "queued", "cancelled"]
    wait_completed([busy, *ahead], timeout=30)

    terminated = submit(api, "sleep", {"seconds": 60})
    wait_status(terminated, "running", timeout=30)
    celery(live_db_url, tmp_path, "control", "terminate", "SIGTERM", terminated)
    task = wait_status(terminated, "cancelled", "pending", "queued", "completed", timeout=30)
    assert task.status == "cancelled" and event_path(terminated)[-2:] == ["running", "cancelled"], event_path(
        terminated
    )


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
