"""PostgreSQL restarts, crashes and recovers, or hangs: workers reconnect by themselves, nothing
is lost, and every task completes once. PostgreSQL holds the task rows in every mode, so
the restart is also made in dual_write and messaging, where a worker holding a broker message
cannot claim its row until the database is back.

A crash loses the WAL that was not yet written: claims, queue leases and acks of the last moments
(they do not wait for the flush), never a submit or an outcome."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tasks.models import Task
from tests.conftest import FAST_WORKER_ENV, ModeSetting, postgres_frozen, purge_rabbitmq, restart_postgres, wait_for
from tests.helpers import completed_once, event_path, submit, wait_completed, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("setting", "how"),
    [
        (ModeSetting("legacy"), "restart-postgres"),
        (ModeSetting("legacy"), "crash-postgres"),
        (ModeSetting("dual_write", 50), "restart-postgres"),
        (ModeSetting("messaging", broker="rabbitmq"), "restart-postgres"),
        (ModeSetting("messaging", broker="kafka"), "restart-postgres"),
    ],
    ids=lambda value: value.id if isinstance(value, ModeSetting) else value,
)
def test_workers_reconnect_after_a_restart_and_every_task_completes_once(
    api: Any, start_worker: Any, switch_mode: Any, setting: ModeSetting, how: str
) -> None:
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", concurrency=4, **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.05}) for _ in range(200)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    restart_postgres(how)
    later = [submit(api, "noop") for _ in range(50)]
    # throughput is back within 10 s of the restart: new tasks complete again
    wait_for(lambda: Task.objects.filter(pk__in=later, status="completed").exists(), 10, 0.2, what="work resumed")
    wait_completed(first + later, timeout=120)
    completed_once(first + later)


def test_a_hang_longer_than_the_stuck_threshold_does_not_run_a_live_task_twice(api: Any, start_worker: Any) -> None:
    # When PostgreSQL answers again every heartbeat is older than the threshold, the live
    # worker's as well; its next heartbeat must count before any sweep recovers the task.
    start_worker("w1", concurrency=2, HELIX_HEARTBEAT_INTERVAL="1")
    task_id = submit(api, "sleep", {"seconds": 12})
    # two heartbeats in: every thread of the worker holds its connection when the database hangs
    wait_for(lambda: Task.objects.filter(pk=task_id, progress__gte=16).exists(), 20, 0.1, what="task under way")
    with postgres_frozen():
        time.sleep(2 * float(FAST_WORKER_ENV["HELIX_STUCK_THRESHOLD"]) + 1)
    task = wait_status(task_id, "completed", "failed", "dead_letter", timeout=40)
    path = event_path(task_id)
    assert task.status == "completed" and path.count("running") == 1 and "stuck" not in path, path


def test_an_outage_is_logged_when_it_begins_and_when_it_ends(api: Any, start_worker: Any) -> None:
    # the worker's loops call the database several times a second; each failed call used to
    # leave a line, most with a traceback
    worker = start_worker("w1", concurrency=2)
    wait_completed([submit(api, "noop") for _ in range(5)], timeout=30)
    restart_postgres("restart-postgres", "8")
    wait_completed([submit(api, "noop") for _ in range(5)], timeout=60)
    wait_for(lambda: "task.maintenance_database_back" in worker.log_path.read_text(), 10, what="the end logged")
    log = worker.log_path.read_text()
    assert log.count("task.maintenance_database_unavailable") == 1
    assert log.count("task.maintenance_database_back") == 1
    assert log.count("migration.state_unavailable") <= 1
    assert "task.maintenance_failed" not in log and "migration.state_unreadable" not in log


@pytest.mark.parametrize(
    "setting", [ModeSetting("legacy"), ModeSetting("messaging", broker="rabbitmq")], ids=lambda value: value.id
)
def test_a_task_that_ends_while_the_database_is_down_keeps_its_outcome_and_runs_once(
    api: Any, start_worker: Any, switch_mode: Any, setting: ModeSetting
) -> None:
    # The handler reports progress into the outage and ends during it. Neither may cost its
    # work: a progress report is dropped, the outcome waits for the database, and the task is
    # not recovered as stuck and run again.
    purge_rabbitmq()
    switch_mode(setting)
    worker = start_worker("w1", concurrency=2, **setting.env)
    task_id = submit(api, "sleep", {"seconds": 3})
    wait_status(task_id, "running", timeout=30)
    restart_postgres("restart-postgres", "6")
    task = wait_status(task_id, "completed", "failed", "dead_letter", timeout=30)
    path = event_path(task_id)
    assert task.status == "completed" and task.retry_count == 0, (task.status, task.last_error)
    assert path.count("running") == 1 and "stuck" not in path, path
    log = worker.log_path.read_text()
    assert log.count("task.outcome_waiting") == 1 and log.count("task.outcome_stored") == 1
