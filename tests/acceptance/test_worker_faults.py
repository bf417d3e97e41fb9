"""Faults with real worker processes: SIGKILL mid-task and a SIGTERM with tasks in hand (both in
every migration mode), a pool process ended under its task, and two workers sharing one queue."""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

import pytest
from django.db.models import Count

from migration.models import QueueMessage
from tasks.models import Task, TaskEvent
from tests import task_types  # noqa: F401  # registers the types the workers import too
from tests.conftest import ModeSetting, wait_for
from tests.helpers import completed_once, event_path, submit, wait_completed, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_task_whose_worker_is_killed_runs_again_and_completes_once(
    api: Any, start_worker: Any, migration_mode: ModeSetting
) -> None:
    first = start_worker("w1", **migration_mode.env)
    task_id = submit(api, "sleep", {"seconds": 3})
    wait_status(task_id, "running", timeout=15)
    first.kill()  # SIGKILL to the whole process group: no ack, no cleanup
    start_worker("w2", **migration_mode.env)
    task = wait_status(task_id, "completed", timeout=45)
    assert task.worker_id.startswith("w2@")
    path = event_path(task_id)
    assert path.count("completed") == 1
    assert path.count("running") == 2 and "stuck" in path, path


def test_a_task_that_keeps_killing_its_worker_ends_in_dead_letter(api: Any, start_worker: Any) -> None:
    # as a task would that runs its worker out of memory: each lost execution is an attempt
    task_id = submit(api, "sleep", {"seconds": 30}, config={"max_retries": 1})
    for attempt, name in enumerate(("w1", "w2"), start=1):
        worker = start_worker(name)
        wait_for(
            lambda attempt=attempt: TaskEvent.objects.filter(task_id=task_id, to_status="running").count() == attempt,
            30,
            0.1,
            what=f"attempt {attempt} running",
        )
        worker.kill()
    start_worker("w3")
    task = wait_status(task_id, "completed", "failed", "dead_letter", timeout=45)
    assert task.status == "dead_letter" and task.last_error.startswith("worker lost"), (task.status, task.last_error)
    path = event_path(task_id)
    assert path.count("running") == 2 and path[-2:] == ["stuck", "dead_letter"], path


#: a prefork worker that would leave a lost execution to the stuck sweep only after a minute
PREFORK_WORKER = {"pool": "prefork", "concurrency": 2, "HELIX_STUCK_THRESHOLD": "60"}


def test_a_task_whose_pool_process_dies_is_retried_at_once(api: Any, start_worker: Any) -> None:
    start_worker(**PREFORK_WORKER)
    task_id = submit(api, "sleep", {"seconds": 2}, config={"max_retries": 1, "retry_delay_seconds": 0.1})
    running = wait_status(task_id, "running", timeout=15)
    os.kill(int(running.worker_id.rsplit(":", 1)[1]), signal.SIGKILL)  # the pool process, not the worker
    task = wait_status(task_id, "completed", "dead_letter", timeout=20)
    assert task.status == "completed" and task.last_error.startswith("worker lost: WorkerLostError"), task.last_error
    assert event_path(task_id) == ["pending", "queued", "running", "pending", "queued", "running", "completed"]


def test_a_handler_that_ignores_its_soft_time_limit_is_ended_and_the_worker_goes_on(
    api: Any, start_worker: Any
) -> None:
    start_worker(**PREFORK_WORKER, HELIX_TASK_MODULES="tests.task_types")
    config = {"timeout_seconds": 1, "max_retries": 2, "retry_delay_seconds": 0.1}
    task_id = submit(api, "tests.stubborn", {"seconds": 60}, config=config)
    task = wait_status(task_id, "completed", "failed", "dead_letter", timeout=60)  # about 6 s per attempt
    assert task.status == "dead_letter"
    assert task.last_error == "timed out after 1.0s; the handler went on, so its process was ended 5s later"
    assert event_path(task_id).count("running") == 3 and "stuck" not in event_path(task_id)
    # Three pool processes were ended. Ended from outside, one could leave the pool's result
    # queue locked, and then no task ran again on this worker.
    wait_completed([submit(api, "noop", {}) for _ in range(10)], timeout=30)


def test_a_worker_whose_pool_stalled_ends_and_its_tasks_run_on_another(api: Any, start_worker: Any) -> None:
    stalled = start_worker(**PREFORK_WORKER, HELIX_TASK_MODULES="tests.task_types", HELIX_POOL_STALL_TIMEOUT="3")
    jam = submit(api, "tests.jam_pool", config={"max_retries": 0})
    wait_status(jam, "running", "dead_letter", timeout=15)
    later = [submit(api, "noop") for _ in range(3)]
    wait_for(lambda: stalled.process.poll() is not None, 60, 0.2, what="the stalled worker to end")
    assert "worker.pool_stalled" in stalled.log_path.read_text()
    start_worker("w2")
    wait_completed(later, timeout=60)
    completed_once(later)
    assert wait_status(jam, "completed", "failed", "dead_letter", timeout=30).status == "dead_letter"


def test_two_workers_complete_two_thousand_tasks_exactly_once(api: Any, start_worker: Any) -> None:
    start_worker("w1", concurrency=4)
    start_worker("w2", concurrency=4)
    ids = [submit(api, "noop") for _ in range(2000)]
    wait_for(
        lambda: Task.objects.filter(status="completed").count() == 2000,
        timeout=240,
        interval=1.0,
        what="2000 completed tasks",
    )
    completions = Counter(
        dict(TaskEvent.objects.filter(to_status="completed").values_list("task_id").annotate(n=Count("id")))
    )
    assert set(map(str, completions)) == set(ids)
    assert set(completions.values()) == {1}
    starts = TaskEvent.objects.filter(to_status="running").values("task_id").annotate(n=Count("id"))
    assert {row["n"] for row in starts} == {1}, "a task was claimed twice"
    by_worker = Counter(w.split("@")[0] for w in Task.objects.values_list("worker_id", flat=True))
    assert by_worker["w1"] > 0 and by_worker["w2"] > 0, by_worker
    wait_for(lambda: not QueueMessage.objects.filter(queue__startswith="helixagent.tasks").exists(), 10, what="acks")


def test_a_worker_stopped_with_sigterm_finishes_its_running_tasks_and_hands_back_the_rest(
    api: Any, start_worker: Any, migration_mode: ModeSetting
) -> None:
    # A lease the stopping worker kept would hide its message for two minutes, past the wait below.
    env = {**migration_mode.env, "HELIX_VISIBILITY_TIMEOUT": "120"}
    first = start_worker("w1", concurrency=2, **env)
    ids = [submit(api, "sleep", {"seconds": 0.5}) for _ in range(20)]
    wait_for(lambda: Task.objects.filter(pk__in=ids, status="running").exists(), 30, 0.05, what="a task running")
    first.stop()  # SIGTERM: Celery's warm shutdown
    assert first.process.returncode == 0
    assert not Task.objects.filter(pk__in=ids, status="running").exists(), "warm shutdown left a task running"
    assert Task.objects.filter(pk__in=ids, status="completed").count() < len(ids), "nothing was left to hand back"
    start_worker("w2", concurrency=4, **env)
    wait_completed(ids, timeout=60)
    completed_once(ids)
    starts = Counter(TaskEvent.objects.filter(task_id__in=ids, to_status="running").values_list("task_id", flat=True))
    assert set(starts.values()) == {1}, "a task ran twice"
