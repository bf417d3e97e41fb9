"""What the worker's main process noted about ``run_task`` requests, recorded on real rows."""

from __future__ import annotations

from typing import Any

import pytest

from tasks import run_request
from tasks.models import Task
from tasks.run_request import Ended, Revoked

pytestmark = pytest.mark.django_db(transaction=True)


def task(status: str, worker_id: str = "", **config: Any) -> str:
    row = Task.objects.create(
        task_type="noop", queue="helixagent.tasks.background", status=status, worker_id=worker_id, config=config
    )
    return str(row.pk)


def record(*notes: Ended | Revoked) -> dict[str, str]:
    run_request._noted.extend(notes)
    run_request.record()
    return {str(pk): status for pk, status in Task.objects.values_list("pk", "status")}


def test_a_revoked_waiting_task_is_cancelled_and_a_running_one_left_alone() -> None:
    waiting, running = task("queued"), task("running", "w1@h:7")
    statuses = record(Revoked(waiting, "revoked through Celery"), Revoked(running, "revoked through Celery"))
    assert statuses == {waiting: "cancelled", running: "running"}
    assert Task.objects.get(pk=waiting).events.last().message == "revoked through Celery"


def test_a_terminated_execution_is_cancelled_unless_its_task_forbids_it() -> None:
    allowed, forbidden = task("running", "w1@h:7"), task("running", "w1@h:8", allow_cancel=False)
    statuses = record(
        Revoked(allowed, "terminated through Celery (signal 15)", "w1@h:7"),
        Revoked(forbidden, "terminated through Celery (signal 15)", "w1@h:8"),
    )
    assert statuses == {allowed: "cancelled", forbidden: "pending"}  # a failed attempt, retried
    assert Task.objects.get(pk=forbidden).last_error.endswith("this task does not allow cancelling it")


def test_a_terminate_that_lands_before_the_claim_cancels_the_waiting_task() -> None:
    waiting = task("queued")
    assert record(Revoked(waiting, "terminated through Celery (signal 15)", "w1@h:7")) == {waiting: "cancelled"}


def test_a_note_about_another_execution_changes_nothing() -> None:
    elsewhere = task("running", "w2@h:9")  # claimed again since, by another process
    statuses = record(
        Ended(elsewhere, "w1@h:7", "worker lost: WorkerLostError"),
        Revoked(elsewhere, "terminated through Celery (signal 15)", "w1@h:7"),
    )
    assert statuses == {elsewhere: "running"}
    assert not run_request._noted
