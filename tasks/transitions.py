"""Every change of a task's status, each with its task-event row, in one transaction.

Invariant: a status changes only here, through :func:`_apply`, which locks the row, checks the
state machine of :mod:`tasks.states` and writes the UPDATE with the expected status in its WHERE
clause, so two processes racing for one task cannot both win. :func:`claim` is the only path into
``running``: a duplicate copy of a message, or a redelivery, finds nothing to claim.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from tasks import states
from tasks.models import Task, TaskEvent

TaskId = uuid.UUID | str


def _apply(
    task_id: TaskId,
    target: str,
    allowed_from: tuple[str, ...],
    *,
    only_execution: uuid.UUID | None = None,
    note: str = "",
    by: str = "",
    data: dict[str, Any] | None = None,
    **updates: Any,
) -> Task | None:
    """Move the task to ``target`` if it is in ``allowed_from``; return the updated row or None.

    With ``only_execution`` the change applies only to that execution, so a worker that lost its
    claim (its task was recovered as stuck) cannot overwrite the newer execution's outcome.
    ``note``, ``by`` and ``data`` go to the event row.
    """
    with transaction.atomic():
        task = Task.objects.select_for_update().filter(pk=task_id).first()
        if task is None or task.status not in allowed_from or not states.can_transition(task.status, target):
            return None
        if only_execution is not None and task.execution_id != only_execution:
            return None
        updates.update(status=target, updated_at=timezone.now())
        if not Task.objects.filter(pk=task_id, status=task.status).update(**updates):
            return None
        TaskEvent.objects.create(
            task_id=task.pk, from_status=task.status, to_status=target, message=note, worker_id=by, data=data
        )
        for key, value in updates.items():
            setattr(task, key, value)
        return task


def record_created(task: Task) -> None:
    """The first event of a task: ``∅ → pending``. Call inside the transaction that inserts it."""
    TaskEvent.objects.create(task_id=task.pk, from_status="", to_status=states.PENDING, message="created")


def mark_queued(task_id: TaskId) -> Task | None:
    """``pending → queued`` once the queue holds a message for the task."""
    return _apply(task_id, states.QUEUED, (states.PENDING,), note="published")


def claim(task_id: TaskId, worker_id: str, source: str) -> Task | None:
    """``pending|queued → running`` for one execution; None if another copy got there first."""
    now = timezone.now()
    return _apply(
        task_id,
        states.RUNNING,
        states.CLAIMABLE,
        note=f"claimed from {source}",
        by=worker_id,
        execution_id=uuid.uuid4(),
        worker_id=worker_id,
        dispatch_source=source,
        started_at=now,
        heartbeat_at=now,
        progress=0,
    )


def complete(task: Task, result: Any) -> Task | None:
    """``running → completed`` for the execution that claimed ``task``."""
    return _apply(
        task.pk,
        states.COMPLETED,
        (states.RUNNING,),
        only_execution=task.execution_id,
        by=task.worker_id,
        result=result,
        progress=100,
        completed_at=timezone.now(),
    )


def fail(task: Task, error: str, *, permanent: bool, delay: float) -> Task | None:
    """A failed execution: retry after ``delay`` seconds while retries remain, else dead-letter.

    ``permanent`` failures go to ``failed`` at once. A retry returns to ``pending`` with
    ``scheduled_at`` in the future; the dispatcher publishes it when it is due.
    """
    common: dict[str, Any] = {"only_execution": task.execution_id, "by": task.worker_id, "last_error": error[:4000]}
    if permanent:
        return _apply(task.pk, states.FAILED, (states.RUNNING,), note=error[:500], completed_at=timezone.now(), **common)
    if task.retry_count >= task.max_retries:
        return _apply(
            task.pk, states.DEAD_LETTER, (states.RUNNING,), note="retries exhausted", completed_at=timezone.now(), **common
        )
    return _apply(
        task.pk,
        states.PENDING,
        (states.RUNNING,),
        note=f"retry {task.retry_count + 1} of {task.max_retries} in {delay:.1f}s",
        retry_count=task.retry_count + 1,
        scheduled_at=timezone.now() + timedelta(seconds=delay),
        execution_id=None,
        **common,
    )


def cancel(task_id: TaskId, reason: str = "cancelled by request") -> Task | None:
    """``pending|queued|running → cancelled``; a running handler's outcome is then discarded."""
    return _apply(task_id, states.CANCELLED, states.CANCELLABLE, note=reason, completed_at=timezone.now())


def redrive(task_id: TaskId) -> Task | None:
    """``dead_letter → pending`` with a fresh retry budget."""
    return _apply(
        task_id, states.PENDING, (states.DEAD_LETTER,), note="re-driven", retry_count=0, scheduled_at=None, completed_at=None
    )


def recover_stuck(threshold_seconds: float) -> list[uuid.UUID]:
    """``running → stuck → pending`` for tasks whose heartbeat is older than the threshold.

    A worker that died mid-task stops heartbeating; its task becomes due again and the
    dispatcher publishes it. Returns the recovered task ids.
    """
    cutoff = timezone.now() - timedelta(seconds=threshold_seconds)
    recovered = []
    for task_id in Task.objects.filter(status=states.RUNNING, heartbeat_at__lt=cutoff).values_list("pk", flat=True)[:500]:
        if _apply(task_id, states.STUCK, (states.RUNNING,), note=f"no heartbeat for {threshold_seconds:.0f}s"):
            _apply(task_id, states.PENDING, (states.STUCK,), note="recovered", execution_id=None, scheduled_at=timezone.now())
            recovered.append(task_id)
    return recovered


def heartbeat(execution_ids: list[uuid.UUID]) -> int:
    """Refresh the heartbeat of the running executions this process holds."""
    if not execution_ids:
        return 0
    return Task.objects.filter(execution_id__in=execution_ids, status=states.RUNNING).update(
        heartbeat_at=timezone.now()
    )


def record_progress(task: Task, percent: int, message: str = "") -> bool:
    """Store progress of a running execution and emit a ``progress`` event."""
    percent = max(0, min(100, int(percent)))
    with transaction.atomic():
        changed = Task.objects.filter(pk=task.pk, status=states.RUNNING, execution_id=task.execution_id).update(
            progress=percent, progress_message=message[:500], heartbeat_at=timezone.now(), updated_at=timezone.now()
        )
        if changed:
            TaskEvent.objects.create(
                task_id=task.pk, kind="progress", message=message[:500], worker_id=task.worker_id, data={"progress": percent}
            )
    return bool(changed)
