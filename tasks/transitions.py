"""Every change of a task's status, each written together with its task-event row.

Invariant: a status changes only here, through :func:`_apply`: one conditional UPDATE that names
the expected current status (allowed by the state machine of :mod:`tasks.states`) in its WHERE
clause, so two processes racing for one task cannot both win, and no status is read, changed in
Python and written back. :func:`claim` is the only path into ``running``: a duplicate copy of a
message, or a redelivery, finds nothing to claim.
"""

from __future__ import annotations

import functools
import uuid
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from helixagent import prepared
from migration import events
from tasks import states
from tasks.models import Task, TaskEvent
from tasks.stuck import Stale

TaskId = uuid.UUID | str


def _prep(model: type[Task] | type[TaskEvent], name: str, value: Any) -> Any:
    return model._meta.get_field(name).get_db_prep_save(value, connection)  # type: ignore[union-attr]


@functools.cache
def _statement(
    vendor: str, update_names: tuple[str, ...], by_execution: bool, event_names: tuple[str, ...], durable: bool = True
) -> str:
    """``UPDATE … WHERE id AND status [AND execution_id] RETURNING <every column>``.

    On PostgreSQL the event row is inserted by the same statement (a data-modifying CTE), so
    the transition and its event are one statement and one round trip. Elsewhere the caller
    inserts the event in the same transaction. The text depends only on which fields change,
    so it is built once per shape (and psycopg's own parse of it is cached as well). A statement
    that is not ``durable`` commits without waiting for the WAL flush (:data:`prepared.ASYNC_COMMIT`).
    """
    table = Task._meta.db_table
    sets = ", ".join(f'"{Task._meta.get_field(name).column}" = %s' for name in update_names)  # type: ignore[union-attr]
    where = '"id" = %s AND "status" = %s' + (' AND "execution_id" = %s' if by_execution else "")
    if vendor == "postgresql" and not durable:
        where += f" AND {prepared.ASYNC_COMMIT}"
    returning = ", ".join(f'"{field.column}"' for field in Task._meta.concrete_fields)
    update = f'UPDATE "{table}" SET {sets} WHERE {where} RETURNING {returning}'
    if vendor != "postgresql":
        return update
    columns = ", ".join(f'"{name}"' for name in event_names)
    values = ", ".join(["%s"] * len(event_names))
    return (
        f'WITH t AS ({update}), e AS (INSERT INTO "{TaskEvent._meta.db_table}" (task_id, {columns}) '
        f"SELECT t.id, {values} FROM t) SELECT * FROM t"
    )


def _transition_sql(
    task_id: TaskId,
    from_status: str,
    only_execution: uuid.UUID | None,
    updates: dict[str, Any],
    event: dict[str, Any],
    durable: bool = True,
) -> tuple[str, list[Any]]:
    """The statement of one attempt (see :func:`_statement`) and its parameters."""
    params = [_prep(Task, name, value) for name, value in updates.items()]
    params += [_prep(Task, "id", task_id), from_status]
    if only_execution is not None:
        params.append(_prep(Task, "execution_id", only_execution))
    if connection.vendor == "postgresql":
        params += [_prep(TaskEvent, name, value) for name, value in event.items()]
    statement = _statement(connection.vendor, tuple(updates), only_execution is not None, tuple(event), durable)
    return statement, params


@functools.cache
def _row_reading(vendor: str) -> tuple[list[str], list[tuple[int, list[Any], Any]]]:
    """The attribute names of a returned row, and Django's conversions from database values per
    column that has any (as a queryset applies them)."""
    converters = []
    for index, field in enumerate(Task._meta.concrete_fields):
        column = field.get_col(Task._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converters.append((index, found, column))
    return [field.attname for field in Task._meta.concrete_fields], converters


def _fetch_task(statement: str, params: list[Any]) -> Task | None:
    """Run a transition statement and build the returned row, if any, into a :class:`Task`."""
    row = prepared.fetchone(statement, params)
    if row is None:
        return None
    names, converters = _row_reading(connection.vendor)
    values = list(row)
    for index, found, column in converters:
        for convert in found:
            values[index] = convert(values[index], column, connection)
    return Task.from_db(connection.alias, names, values)


def _apply(
    task_id: TaskId,
    target: str,
    allowed_from: tuple[str, ...],
    *,
    only_execution: uuid.UUID | None = None,
    note: str = "",
    by: str = "",
    data: dict[str, Any] | None = None,
    durable: bool = True,
    **updates: Any,
) -> Task | None:
    """Move the task to ``target`` if it is in one of ``allowed_from``; return the new row or None.

    Each attempt is one conditional UPDATE on one expected status (the most likely first) that
    writes its event row with it. With ``only_execution`` the change applies only to that
    execution, so a worker that lost its claim (its task was recovered as stuck) cannot
    overwrite the newer execution's outcome. ``note``, ``by`` and ``data`` go to the event.
    ``durable=False`` lets a change that is its own transaction commit without waiting for the
    WAL flush; inside the caller's transaction the change is always durable.
    """
    now = timezone.now()
    updates.update(status=target, updated_at=now)
    single_statement = connection.vendor == "postgresql"
    durable = durable or connection.in_atomic_block
    with nullcontext() if single_statement else transaction.atomic():
        for from_status in allowed_from:
            if not states.can_transition(from_status, target):
                continue
            event = {
                "kind": "transition",
                "from_status": from_status,
                "to_status": target,
                "message": note,
                "worker_id": by,
                "data": data,
                "created_at": now,
            }
            statement, params = _transition_sql(task_id, from_status, only_execution, updates, event, durable)
            task = _fetch_task(statement, params)
            if task is not None:
                if not single_statement:
                    TaskEvent.objects.create(task_id=task.pk, **event)
                mirror_after_commit(str(task.pk), event)
                return task
    return None


def mirror_after_commit(task_id: str, event: dict[str, Any]) -> None:
    """Mirror an event to Kafka once it is committed (at once outside a transaction)."""
    transaction.on_commit(lambda: events.mirror(task_id, event))


def created_events(task: Task, queued: bool = False) -> list[TaskEvent]:
    """The first events of a new task: ``∅ → pending``, and ``pending → queued`` when its message
    was published in the same transaction that inserts it (the row is not visible before)."""
    rows = [TaskEvent(task_id=task.pk, from_status="", to_status=states.PENDING, message="created")]
    if queued:
        rows.append(
            TaskEvent(task_id=task.pk, from_status=states.PENDING, to_status=states.QUEUED, message="published")
        )
    return rows


def record_created(task: Task, queued: bool = False) -> None:
    """Insert the first events of a new task in the caller's transaction."""
    rows = created_events(task, queued)
    TaskEvent.objects.bulk_create(rows)
    mirror_created(task, rows)


def mirror_created(task: Task, rows: list[TaskEvent]) -> None:
    for row in rows:
        fields = {"kind": row.kind, "from_status": row.from_status, "to_status": row.to_status, "message": row.message}
        mirror_after_commit(str(task.pk), fields)


def mark_queued(task_id: TaskId, published_to: str = "") -> Task | None:
    """``pending → queued`` once the queue holds a message for the task (``published_to``: where)."""
    return _apply(
        task_id,
        states.QUEUED,
        (states.PENDING,),
        note=f"published to {published_to}" if published_to else "published",
        published_to=published_to,
    )


def claim(task_id: TaskId, worker_id: str, source: str) -> Task | None:
    """``pending|queued → running`` for one execution; None if another copy got there first.

    ``queued`` is tried first (the common case), then ``pending``, then ``queued`` once more: a
    broker copy can arrive before its publisher marks the row ``queued``, and that mark may land
    between the first two attempts.

    The claim commits without waiting for the WAL flush. A database crash can lose it, but the
    crash costs the execution under way its outcome either way (it cannot be stored, and the
    message is delivered again), so the task runs again whether the claim survived (recovered as
    stuck) or not (claimed afresh). The outcome's durable commit flushes the claim before it."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "execution_id": uuid.uuid4(),
        "worker_id": worker_id,
        "dispatch_source": source,
        "started_at": now,
        "heartbeat_at": now,
        "progress": 0,
    }
    for expected in ((states.QUEUED, states.PENDING), (states.QUEUED,)):
        task = _apply(
            task_id, states.RUNNING, expected, note=f"claimed from {source}", by=worker_id, durable=False, **fields
        )
        if task is not None:
            return task
    return None


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
    ``scheduled_at`` in the future; the dispatcher publishes it when it is due. A NUL character in
    ``error`` (PostgreSQL's text refuses it) is written as ``\\0``.
    """
    error = error.replace("\x00", "\\0")
    common: dict[str, Any] = {"only_execution": task.execution_id, "by": task.worker_id, "last_error": error[:4000]}
    if permanent:
        return _apply(
            task.pk, states.FAILED, (states.RUNNING,), note=error[:500], completed_at=timezone.now(), **common
        )
    if task.retry_count >= task.max_retries:
        return _apply(
            task.pk,
            states.DEAD_LETTER,
            (states.RUNNING,),
            note="retries exhausted",
            completed_at=timezone.now(),
            **common,
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


def cancel(task_id: TaskId, reason: str = "cancelled by request", waiting_only: bool = False) -> Task | None:
    """``pending|queued|running → cancelled`` (only from ``pending|queued`` when ``waiting_only``);
    a running handler's outcome is then discarded."""
    expected = states.CLAIMABLE if waiting_only else states.CANCELLABLE
    return _apply(task_id, states.CANCELLED, expected, note=reason, completed_at=timezone.now())


def redrive(task_id: TaskId) -> Task | None:
    """``dead_letter → pending`` with a fresh retry budget; the dispatcher publishes it."""
    return _apply(
        task_id,
        states.PENDING,
        (states.DEAD_LETTER,),
        note="re-driven",
        retry_count=0,
        scheduled_at=timezone.now(),
        completed_at=None,
    )


def stale_executions(threshold_seconds: float, limit: int = 500) -> list[Stale]:
    """Running executions whose heartbeat is older than the threshold: their worker died, or the
    database was away (:mod:`tasks.stuck` tells the two apart before anything is recovered)."""
    cutoff = timezone.now() - timedelta(seconds=threshold_seconds)
    rows = Task.objects.filter(status=states.RUNNING, heartbeat_at__lt=cutoff).values_list(
        "pk", "execution_id", "heartbeat_at"
    )
    return [Stale(*row) for row in rows[:limit]]


def recover_execution(stale: Stale, threshold_seconds: float) -> Task | None:
    """``running → stuck``, then ``pending`` or ``dead_letter``, for one execution found by
    :func:`stale_executions`; returns the recovered row, or None if there was nothing to do.

    A lost execution counts as a failed attempt: while retries remain the task goes back to
    ``pending`` at once with ``retry_count + 1`` and the dispatcher publishes it; with none left it
    goes to ``dead_letter``. A task that kills every worker that runs it (out of memory, a crash in
    native code) thus ends after ``max_retries + 1`` attempts instead of taking workers down forever.

    Does nothing if the task has moved on since it was found: claimed again (after another
    worker's recovery), or heartbeating again. The row stays locked from that check to the end,
    so a heartbeat arriving meanwhile waits and then finds the task no longer running.
    """
    with transaction.atomic():
        locked = Task.objects.select_for_update().filter(
            pk=stale.task_id, status=states.RUNNING, execution_id=stale.execution_id
        )
        found = list(locked.values_list("heartbeat_at", "retry_count", "max_retries"))
        if [row[0] for row in found] != [stale.heartbeat_at]:
            return None
        _, retry_count, max_retries = found[0]
        error = f"worker lost: no heartbeat for {threshold_seconds:.0f}s"
        _apply(stale.task_id, states.STUCK, (states.RUNNING,), only_execution=stale.execution_id, note=error)
        if retry_count >= max_retries:
            return _apply(
                stale.task_id,
                states.DEAD_LETTER,
                (states.STUCK,),
                note="retries exhausted",
                last_error=error,
                completed_at=timezone.now(),
            )
        return _apply(
            stale.task_id,
            states.PENDING,
            (states.STUCK,),
            note=f"recovered: retry {retry_count + 1} of {max_retries}",
            last_error=error,
            retry_count=retry_count + 1,
            execution_id=None,
            scheduled_at=timezone.now(),
        )


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
                task_id=task.pk,
                kind="progress",
                message=message[:500],
                worker_id=task.worker_id,
                data={"progress": percent},
            )
    if changed:
        mirror_after_commit(str(task.pk), {"kind": "progress", "message": message[:500], "data": {"progress": percent}})
    return bool(changed)
