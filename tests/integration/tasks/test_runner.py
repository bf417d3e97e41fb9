"""What the runner stores when a handler ends, on a real PostgreSQL: a result or an error the
database would refuse still ends the task, and says why."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connections, transaction

from tasks import registry, runner, transitions
from tasks.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def claimed_task_ending_with(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], Task]:
    """A claimed task of a test type whose handler returns ``outcome``, raises it, or calls it."""

    def claimed(outcome: Any) -> Task:
        def handler(ctx: registry.TaskContext, payload: dict[str, Any]) -> Any:
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome() if callable(outcome) else outcome

        monkeypatch.setitem(registry._REGISTRY, "test.outcome", registry.TaskType("test.outcome", handler, ""))
        task = Task.objects.create(task_type="test.outcome", queue="helixagent.tasks.background")
        running = transitions.claim(task.pk, "w1", "postgresql")
        assert running is not None
        return running

    return claimed


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"tags": {"a", "b"}}, "not JSON serializable"),
        ({"score": float("nan")}, "Out of range float values"),
        ({"text": "a\x00b"}, "NUL character"),
    ],
    ids=["not-json", "nan", "nul"],
)
def test_a_result_the_database_would_refuse_fails_the_task_saying_why(
    claimed_task_ending_with: Callable[[Any], Task], result: Any, reason: str
) -> None:
    # before, the row stayed running, and the stuck sweep ran the task again and again
    outcome = runner.execute(claimed_task_ending_with(result))
    assert outcome is not None and outcome.status == "failed", outcome
    assert reason in outcome.last_error and outcome.last_error.startswith("the result cannot be stored")


def test_a_result_holding_an_escaped_backslash_before_u0000_is_stored(
    claimed_task_ending_with: Callable[[Any], Task],
) -> None:
    outcome = runner.execute(claimed_task_ending_with({"text": "C:\\u0000"}))  # no NUL: a backslash, then text
    assert outcome is not None and outcome.status == "completed"
    assert Task.objects.get(pk=outcome.pk).result == {"text": "C:\\u0000"}


def test_an_error_holding_a_nul_character_is_stored_with_the_retry(
    claimed_task_ending_with: Callable[[Any], Task],
) -> None:
    outcome = runner.execute(claimed_task_ending_with(RuntimeError("bad\x00byte")))
    assert outcome is not None and (outcome.status, outcome.retry_count) == ("pending", 1)
    assert outcome.last_error == "RuntimeError: bad\\0byte"


def test_a_time_limit_that_cut_a_transaction_short_still_lets_the_outcome_be_stored(
    claimed_task_ending_with: Callable[[Any], Task],
) -> None:
    # The soft limit is raised wherever the handler happens to be, even inside Django's own
    # transaction code, which can leave this thread's connection marked inside a transaction.
    def cut_short() -> None:
        transaction.atomic().__enter__()  # never left, as if the limit struck in its __exit__
        raise SoftTimeLimitExceeded()

    outcome = execute_in_a_thread(claimed_task_ending_with(cut_short))
    assert outcome is not None and outcome.status == "pending" and outcome.last_error.startswith("timed out")


def test_an_outcome_is_committed_although_the_handler_left_a_transaction_open(
    claimed_task_ending_with: Callable[[Any], Task],
) -> None:
    def forgets_to_commit() -> str:
        transaction.atomic().__enter__()
        return "done"

    task = claimed_task_ending_with(forgets_to_commit)
    outcome = execute_in_a_thread(task)
    assert outcome is not None and outcome.status == "completed"
    assert Task.objects.get(pk=task.pk).status == "completed"  # seen from this test's own connection


def execute_in_a_thread(task: Task) -> Task | None:
    """``runner.execute`` in a thread of its own, as the threads pool runs it, so that what a
    handler does to its thread's connection stays there; fails if it has not ended in 30 s."""
    outcomes: list[Task | None] = []

    def run() -> None:
        try:
            outcomes.append(runner.execute(task))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)  # daemon: a runner stuck retrying ends with the tests
    thread.start()
    thread.join(30)
    assert outcomes, "the outcome was never stored"
    return outcomes[0]
