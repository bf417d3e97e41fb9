"""Task state changes on a real PostgreSQL: one claim wins, outcomes belong to their execution."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from bench.common import wal_flushes
from tasks import states, transitions
from tasks.models import Task, TaskEvent

pytestmark = pytest.mark.django_db(transaction=True)


def new_task(**fields: Any) -> Task:
    task = Task.objects.create(task_type="echo", queue="helixagent.tasks.background", **fields)
    transitions.record_created(task)
    return task


def test_only_one_of_many_concurrent_claims_wins() -> None:
    task = new_task()
    winners: list[Task] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        claimed = transitions.claim(task.pk, f"worker-{n}", "postgresql")
        if claimed:
            winners.append(claimed)
        connection.close()

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert TaskEvent.objects.filter(task=task, to_status=states.RUNNING).count() == 1


def test_a_claim_commits_without_waiting_for_the_wal_flush_and_an_outcome_waits() -> None:
    created = [new_task() for _ in range(100)]
    before = wal_flushes()
    claimed = [transitions.claim(task.pk, "w1", "postgresql") for task in created]
    after_claims = wal_flushes()
    for task in claimed:
        assert task is not None
        transitions.complete(task, {})
    after_outcomes = wal_flushes()
    assert after_outcomes - after_claims >= 100  # each outcome flushed before its commit returned
    assert after_claims - before < 50  # 100 durable claims would be 100 flushes


def test_an_outcome_only_applies_to_the_execution_that_claimed() -> None:
    task = new_task()
    first = transitions.claim(task.pk, "w1", "postgresql")
    assert first is not None
    Task.objects.filter(pk=task.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    [stale] = transitions.stale_executions(threshold_seconds=30)
    assert stale.task_id == task.pk and transitions.recover_execution(stale, threshold_seconds=30)
    second = transitions.claim(task.pk, "w2", "postgresql")
    assert second is not None
    assert transitions.complete(first, {"from": "w1"}) is None  # the stale execution is ignored
    assert transitions.complete(second, {"from": "w2"}) is not None
    task.refresh_from_db()
    assert (task.status, task.result, task.worker_id) == ("completed", {"from": "w2"}, "w2")
    path = list(TaskEvent.objects.filter(task=task).order_by("id").values_list("to_status", flat=True))
    assert path == ["pending", "running", "stuck", "pending", "running", "completed"]


def test_a_lost_execution_counts_as_an_attempt_and_the_last_one_dead_letters() -> None:
    # a task that kills the worker running it must end, not take workers down forever
    task = new_task(max_retries=1)
    for expected, retries in ((states.PENDING, 1), (states.DEAD_LETTER, 1)):
        assert transitions.claim(task.pk, "w1", "postgresql") is not None
        Task.objects.filter(pk=task.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
        [stale] = transitions.stale_executions(threshold_seconds=30)
        recovered = transitions.recover_execution(stale, threshold_seconds=30)
        assert recovered is not None and (recovered.status, recovered.retry_count) == (expected, retries)
        assert recovered.last_error == "worker lost: no heartbeat for 30s"
    path = list(TaskEvent.objects.filter(task=task).order_by("id").values_list("to_status", flat=True))
    assert path == ["pending", "running", "stuck", "pending", "running", "stuck", "dead_letter"]
    assert transitions.redrive(task.pk) is not None  # kept and re-drivable like any dead letter


def test_failures_retry_with_backoff_then_dead_letter() -> None:
    task = new_task(max_retries=1)
    running = transitions.claim(task.pk, "w1", "postgresql")
    assert running is not None
    retried = transitions.fail(running, "boom", permanent=False, delay=30)
    assert retried is not None and retried.status == states.PENDING and retried.retry_count == 1
    assert retried.scheduled_at is not None and retried.scheduled_at > timezone.now() + timedelta(seconds=25)
    running = transitions.claim(task.pk, "w1", "postgresql")
    assert running is not None
    dead = transitions.fail(running, "boom again", permanent=False, delay=30)
    assert dead is not None and dead.status == states.DEAD_LETTER and dead.last_error == "boom again"
    redriven = transitions.redrive(task.pk)
    assert redriven is not None and redriven.status == states.PENDING and redriven.retry_count == 0


def test_permanent_failure_skips_retries() -> None:
    running = transitions.claim(new_task(max_retries=5).pk, "w1", "postgresql")
    assert running is not None
    failed = transitions.fail(running, "bad input", permanent=True, delay=0)
    assert failed is not None and failed.status == states.FAILED


def test_a_cancelled_running_task_keeps_its_cancelled_state() -> None:
    running = transitions.claim(new_task().pk, "w1", "postgresql")
    assert running is not None
    assert transitions.cancel(running.pk) is not None
    assert transitions.complete(running, "late result") is None
    assert Task.objects.get(pk=running.pk).status == states.CANCELLED


def test_heartbeat_keeps_a_running_task_from_being_recovered() -> None:
    running = transitions.claim(new_task().pk, "w1", "postgresql")
    assert running is not None and running.execution_id is not None
    Task.objects.filter(pk=running.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert transitions.heartbeat([running.execution_id]) == 1
    assert transitions.stale_executions(threshold_seconds=30) == []


def test_an_execution_that_heartbeats_after_it_was_found_stale_is_not_recovered() -> None:
    running = transitions.claim(new_task().pk, "w1", "postgresql")
    assert running is not None and running.execution_id is not None
    Task.objects.filter(pk=running.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    [stale] = transitions.stale_executions(threshold_seconds=30)
    assert transitions.heartbeat([running.execution_id]) == 1  # its worker is alive after all

    assert transitions.recover_execution(stale, threshold_seconds=30) is None
    assert Task.objects.get(pk=running.pk).status == states.RUNNING


def test_a_stale_execution_found_before_the_task_was_claimed_again_is_not_recovered_in_its_place() -> None:
    first = transitions.claim(new_task().pk, "w1", "postgresql")
    assert first is not None
    Task.objects.filter(pk=first.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    # Two recoveries find the same stale execution; the first recovers it and a copy is claimed again.
    [stale] = transitions.stale_executions(threshold_seconds=30)
    assert transitions.recover_execution(stale, threshold_seconds=30)
    second = transitions.claim(first.pk, "w2", "postgresql")
    assert second is not None

    assert transitions.recover_execution(stale, threshold_seconds=30) is None
    task = Task.objects.get(pk=first.pk)
    assert (task.status, task.execution_id) == (states.RUNNING, second.execution_id)
    assert TaskEvent.objects.filter(task_id=first.pk, to_status=states.STUCK).count() == 1
