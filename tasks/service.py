"""Submitting, publishing and cancelling tasks: the operations the API and the worker share."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from kombu import Connection, Producer, pools

from helixagent.config import get_config
from migration import gather, modes, state
from tasks import routing, states, transitions
from tasks.exceptions import InvalidTransition, TaskNotFound
from tasks.models import Task
from tasks.registry import get_task_type
from tasks.timelimit import CELERY_BACKSTOP, HARD_LIMIT_GRACE

#: a pending task untouched this long without a schedule is published by the dispatcher (a
#: safety net: every path back to ``pending`` sets ``scheduled_at``).
REPUBLISH_GRACE = timedelta(seconds=5)


def submit(fields: dict[str, Any], idempotency_key: str | None = None) -> tuple[Task, bool]:
    """Create a task (and publish it unless it is scheduled later); return it and whether it is new."""
    get_task_type(fields["task_type"])
    if idempotency_key:
        existing = Task.objects.filter(idempotency_key=idempotency_key).first()
        if existing:
            return existing, False
    cfg = get_config().tasks
    config = dict(fields.get("config") or {})
    task = Task(
        task_type=fields["task_type"],
        task_name=fields.get("task_name") or fields["task_type"],
        priority=fields.get("priority") or "normal",
        payload=fields.get("payload") or {},
        correlation_id=fields.get("correlation_id") or "",
        parent_task_id=fields.get("parent_task_id"),
        scheduled_at=fields.get("scheduled_at"),
        deadline=fields.get("deadline"),
        queue=routing.queue_for(fields["task_type"]),
        max_retries=int(config.get("max_retries", cfg.default_max_retries)),
        idempotency_key=idempotency_key or None,
        config=config,
    )
    due = task.scheduled_at is None or task.scheduled_at <= timezone.now()
    if due:
        task.status = states.QUEUED
        task.published_to = _legs()
    try:
        if due and connection.vendor == "postgresql" and not connection.in_atomic_block:
            _insert_in_one_statement(task)
        else:
            with transaction.atomic():
                task.save(force_insert=True)
                transitions.record_created(task, queued=due)
                if due:
                    _send(task)
    except IntegrityError:
        if idempotency_key:
            return Task.objects.get(idempotency_key=idempotency_key), False
        raise
    return task, True


def _insert_in_one_statement(task: Task) -> None:
    """The row, its first events, its queue message and outbox records as one statement: one
    round trip and one commit (:mod:`migration.gather`)."""
    events = transitions.created_events(task, queued=True)
    with gather.gather() as statement:
        statement.insert(task)
        statement.insert(*events)
        _send(task)
    statement.run()
    task._state.adding = False
    transitions.mirror_created(task, events)


@functools.cache
def _router() -> Connection:
    """The router connection that pooled producers clone: publishing through Django's connection."""
    from helixagent.celery import app

    return Connection(app.conf.broker_url, transport_options={**app.conf.broker_transport_options, "dsn": "django"})


@contextmanager
def producer() -> Iterator[Producer]:
    """A producer on the router, the calling thread's alone until the block ends.

    It writes the PostgreSQL queue through the calling thread's own Django connection, so a
    queue message commits with its task row. Producers come from kombu's pool rather than one
    per thread: the API serves each request on a new thread, and a new producer would declare
    its queue again, a statement more for every submit.
    """
    with pools.producers[_router()].acquire(block=True) as current:
        yield current


def _legs() -> str:
    """Where a message published now goes, as recorded on the task row (``postgresql+rabbitmq``)."""
    snapshot = state.current()
    return "+".join(modes.publish_legs(snapshot.mode, snapshot.broker))


def publish(task: Task) -> None:
    """Put the task's message in the queue and mark the task ``queued``, in one transaction."""
    task.published_to = _legs()
    with transaction.atomic():
        _send(task)
        transitions.mark_queued(task.pk, published_to=task.published_to)


def _send(task: Task) -> None:
    """Publish the task's message inside the caller's transaction.

    The router (:mod:`migration.router`) decides where the message goes from the migration
    mode. A PostgreSQL queue message commits with the task row; a broker copy commits with it
    as an outbox record and leaves after commit. Either way an accepted task always has its
    message. The type and payload checksum travel in headers so a shadow copy can be checked
    against the row.
    """
    from tasks.runner import run_task

    options: dict[str, Any] = {
        "headers": {
            modes.TYPE_HEADER: task.task_type,
            modes.CHECKSUM_HEADER: modes.payload_checksum(task.payload),
            modes.LEGS_HEADER: task.published_to,
        },
        "args": [str(task.pk)],
        "task_id": str(task.pk),
        "queue": task.queue,
        "priority": states.MESSAGE_PRIORITY.get(task.priority, 5),
    }
    limit = time_limit(task)
    if limit:
        # the runner ends a prefork process HARD_LIMIT_GRACE after the soft limit; Celery's own
        # hard limit is the backstop for a process whose threads cannot run (tasks.timelimit)
        options.update(soft_time_limit=limit, time_limit=limit + HARD_LIMIT_GRACE + CELERY_BACKSTOP)
    with producer() as current:
        run_task.apply_async(producer=current, **options)


def time_limit(task: Task) -> float | None:
    """Seconds an execution may run: the task's ``config.timeout_seconds``, else
    ``tasks.default_timeout``; None when neither sets one (a default of 0)."""
    configured = task.config.get("timeout_seconds") if isinstance(task.config, dict) else None
    limit = float(configured) if configured else get_config().tasks.default_timeout
    return limit or None


def retry_delay(task: Task) -> float:
    """Seconds before the next attempt of ``task`` after a failed one: its own
    ``config.retry_delay_seconds``, else the configured exponential backoff."""
    cfg = get_config().tasks
    configured = task.config.get("retry_delay_seconds") if isinstance(task.config, dict) else None
    return states.retry_delay(
        task.retry_count, cfg.retry_backoff_base, cfg.retry_backoff_max, float(configured) if configured else None
    )


def reenqueue(task_ids: list[uuid.UUID] | list[str]) -> int:
    """Publish a PostgreSQL copy of each task still waiting for a worker (``queued``, or
    ``pending`` and due): after a rollback, or when the copy meant to run it was lost. The claim
    keeps a task that also has another copy from running twice."""
    count = 0
    now = timezone.now()
    for task in Task.objects.filter(pk__in=task_ids, status__in=[states.QUEUED, states.PENDING]):
        if task.status == states.PENDING and task.scheduled_at and task.scheduled_at > now:
            continue
        task.published_to = modes.POSTGRESQL
        with transaction.atomic():
            _send(task)
        count += 1
    return count


def dispatch_due(limit: int = 500) -> int:
    """Publish pending tasks that are due: scheduled ones, retries, re-driven and recovered tasks,
    and any pending task left without a message. ``SKIP LOCKED`` keeps workers apart."""
    now = timezone.now()
    due = Task.objects.filter(status=states.PENDING, scheduled_at__lte=now) | Task.objects.filter(
        status=states.PENDING, scheduled_at__isnull=True, updated_at__lt=now - REPUBLISH_GRACE
    )
    count = 0
    with transaction.atomic():
        for task in due.select_for_update(skip_locked=True).order_by("scheduled_at")[:limit]:
            publish(task)
            count += 1
    return count


def get(task_id: uuid.UUID | str) -> Task:
    try:
        return Task.objects.get(pk=task_id)
    except (Task.DoesNotExist, ValueError, TypeError):
        raise TaskNotFound(f"task {task_id} does not exist") from None


def cancel(task_id: uuid.UUID | str) -> Task:
    """Cancel a task that has not ended; refused when its config forbids cancelling it while running."""
    task = get(task_id)
    if task.status == states.RUNNING and task.config.get("allow_cancel") is False:
        raise InvalidTransition("this task does not allow cancelling while running", {"config.allow_cancel": False})
    cancelled = transitions.cancel(task.pk)
    if cancelled is None:
        current = get(task_id)
        raise InvalidTransition(f"task is {current.status}; only pending, queued or running tasks can be cancelled")
    return cancelled
