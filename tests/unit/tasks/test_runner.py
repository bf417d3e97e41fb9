"""The worker's signal handlers, and what an execution does while the database is away (:mod:`tasks.runner`)."""

from __future__ import annotations

import select
import threading

import pytest
from celery.signals import worker_shutting_down
from django.db import OperationalError

from migration.pgqueue import transport as pgqueue
from migration.pgqueue.bell import Bell
from tasks import runner, transitions  # importing the runner connects the worker's signal handlers
from tasks.models import Task


def test_a_shutdown_signal_stops_the_queue_and_wakes_its_waiting_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgqueue, "stopping", threading.Event())
    bell = Bell()  # the bell of a consuming loop, unarmed: its window has room, it waits for work
    worker_shutting_down.send(sender="w1@host", sig="SIGTERM", how="Warm", exitcode=0)
    assert pgqueue.stopping.is_set()
    assert select.select([bell.fileno()], [], [], 0)[0]
    bell.close()


def test_an_outcome_waits_for_the_database_and_is_stored_once_it_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner, "OUTCOME_RETRY_SECONDS", 0.0)
    calls = []

    def store() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise OperationalError("connection refused")
        return "stored"

    with caplog.at_level("INFO", logger="helixagent.tasks.runner"):
        assert runner._store_outcome(Task(), store) == "stored"  # type: ignore[arg-type]
    assert len(calls) == 4
    assert [r.getMessage() for r in caplog.records] == ["task.outcome_waiting", "task.outcome_stored"]
    assert caplog.records[1].attempts == 4


def test_a_progress_report_the_database_cannot_take_is_dropped_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(*_: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(transitions, "record_progress", unreachable)
    context = runner._Context(Task())
    with caplog.at_level("INFO", logger="helixagent.tasks.runner"):
        for percent in (10, 20, 30):
            context.progress(percent)  # does not raise into the handler
    assert [r.getMessage() for r in caplog.records] == ["task.progress_unsaved"]


@pytest.mark.parametrize(
    ("args", "kwargs", "found"),
    [
        (("a-task-id",), {}, "a-task-id"),
        ((), {"task_id": "a-task-id"}, "a-task-id"),
        ((), {}, None),
        (("a-task-id", "more"), {}, None),
        (("a-task-id",), {"task_id": "another"}, None),
        ((), {"id": "a-task-id"}, None),
    ],
)
def test_a_message_names_its_task_by_one_argument_given_either_way(
    args: tuple[object, ...], kwargs: dict[str, object], found: object
) -> None:
    assert runner._task_id_argument(args, kwargs) == found
