"""Waiting tasks whose only copy a broker lost, and the PostgreSQL copy that saves each of them.

A broker can drop a message it had confirmed: an operator purges or deletes a RabbitMQ queue,
deletes the Kafka work topic, or a broker's data is replaced. In ``messaging`` mode that copy was
the task's only one, and the task would wait as ``queued`` for ever.

No broker tells which messages it holds, but a depth of zero tells that it holds none. So every
few seconds a worker reads the depth of each queue of the current mode's broker (Kafka: the
group's lag, so a message fetched but not finished still counts). A task published to that
queue before a moment its queue was seen empty, and still ``queued`` one look later, has lost its
copy, unless a worker holds it without having claimed it yet: RabbitMQ counts a message in a
worker's prefetch window as neither ready nor gone. So before copying, the sweep asks every
worker what it holds (the ``helix_held`` remote-control command, over Celery's own mailbox), and
each task held nowhere gets a PostgreSQL copy, which every mode consumes. A worker that does not
answer in time may hold a task that gets a copy anyway: the claim runs it once.

``dual_write`` keeps two copies and its verifier reports a missing one; only tasks whose
``published_to`` names the broker alone are looked at here.

The PostgreSQL queue can lose copies too: ``celery purge`` empties its task queues, and an
operator can delete its rows. Its table is read directly, in every mode (each one consumes it):
a task whose only copy went there, still ``queued``, with no message there, lost it. A message
stays in the table while a worker holds it, so no worker needs asking. So purging a queue, on
any broker, never drops a task: cancelling the task does.
"""

from __future__ import annotations

import uuid
import zlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery.worker import state as worker_state
from celery.worker.control import inspect_command
from django.db import connection
from django.db.models import CharField, Exists, OuterRef
from django.db.models.functions import Cast
from django.utils import timezone

from helixagent.logging import get_logger
from migration import modes, state
from migration.models import OutboxMessage, QueueMessage
from migration.stranded import copy_batches

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from tasks.models import Task

log = get_logger("migration.lost")
BATCH = 500
#: PostgreSQL advisory lock held while a batch is found and copied (see ``copy_batches``).
LOCK_KEY = zlib.crc32(b"helixagent.migration.lost")
#: the one queue name Kafka's depth is read under: every queue shares the work topic.
KAFKA_ALL_QUEUES = "*"
#: seconds the sweep waits for the workers' answers to ``helix_held``.
HELD_REPLY_TIMEOUT = 3.0
#: how long a task must have waited before its missing PostgreSQL copy counts as lost. A copy
#: commits with its row, so this only keeps clear of clocks that differ between hosts.
POSTGRESQL_GRACE = timedelta(seconds=5)


class Sightings:
    """When each broker queue was last seen empty, as this process looked."""

    def __init__(self) -> None:
        self._empty_at: dict[tuple[str, str], datetime] = {}

    def look(self, broker: str, queue: str, depth: int, now: datetime) -> datetime | None:
        """Record a depth just read; return the previous look's time if it found the queue empty."""
        key = (broker, queue)
        before = self._empty_at.pop(key, None)
        if depth <= 0:
            self._empty_at[key] = now
        return before

    def forget(self, broker: str) -> None:
        """A broker not read or no longer consumed: what was seen of it says nothing of later."""
        for key in [key for key in self._empty_at if key[0] == broker]:
            del self._empty_at[key]


_sightings = Sightings()


def reenqueue() -> int:
    """Look at the depths of the current broker; give each task that lost its copy a PostgreSQL
    copy. Returns how many were given one. A broker that does not answer is skipped: its outage
    is logged where it is used."""
    from migration.status import broker_depths

    snapshot = state.current()
    for other in (modes.RABBITMQ, modes.KAFKA):
        if snapshot.mode != modes.MESSAGING or other != snapshot.broker:
            _sightings.forget(other)
    if snapshot.mode != modes.MESSAGING:
        return 0
    broker, now = snapshot.broker, timezone.now()
    try:
        depths = broker_depths(broker, dead_letters=False)
    except Exception as exc:  # the broker is away, or a deleted queue is not declared again yet
        log.debug("migration.lost_depth_unread", extra={"broker": broker, "error": str(exc)})
        _sightings.forget(broker)
        return 0
    if broker == modes.KAFKA:
        depths = {KAFKA_ALL_QUEUES: sum(depths.values())}
    moved, held = 0, None
    for name, depth in depths.items():
        empty_at = _sightings.look(broker, name, depth, now)
        queue = None if name == KAFKA_ALL_QUEUES else name
        if empty_at is None or not _waiting(broker, queue, empty_at).exists():
            continue
        if held is None:
            held = held_by_workers()
            if held is None:  # held and lost cannot be told apart: the next look tries again
                _sightings.forget(broker)
                return moved
        moved += _copy_lost(broker, queue, empty_at, held)
    return moved


def restore_postgresql_copies() -> int:
    """Give a PostgreSQL copy to each task whose only copy went to the PostgreSQL queue and is
    no longer there (a purged or deleted queue); returns how many were given one."""
    moved = copy_batches(LOCK_KEY, lambda after: _without_postgresql_copy(timezone.now() - POSTGRESQL_GRACE, after))
    if moved:
        log.warning("migration.lost_copies_reenqueued", extra={"count": moved, "broker": modes.POSTGRESQL})
    return moved


def _without_postgresql_copy(before: datetime, after: uuid.UUID | None) -> list[uuid.UUID]:
    """The next batch of tasks ``queued`` on PostgreSQL alone since before ``before``; on
    PostgreSQL, only those without a message there (``copy_batches`` checks that on any database)."""
    from tasks.models import Task

    waiting = Task.objects.filter(status="queued", published_to=modes.POSTGRESQL, updated_at__lt=before)
    if connection.vendor == "postgresql":  # a message names its task as text (SQLite keeps the uuid as hex)
        copies = QueueMessage.objects.filter(message_id=Cast(OuterRef("pk"), CharField()))
        waiting = waiting.exclude(Exists(copies))
    if after is not None:
        waiting = waiting.filter(pk__gt=after)
    return list(waiting.order_by("pk").values_list("pk", flat=True)[:BATCH])


@inspect_command()  # type: ignore[untyped-decorator]
def helix_held(state: Any) -> dict[str, list[str]]:
    """The task ids this worker holds without having claimed them: reserved by Celery, or
    received from a broker and waiting in the router's prefetch window."""
    from migration.router import Channel

    ids = {request.id for request in worker_state.reserved_requests}
    ids |= {request.id for request in worker_state.active_requests}
    channel = getattr(getattr(state.consumer, "task_consumer", None), "channel", None)
    if isinstance(channel, Channel):
        for _name, leg in channel.consuming_brokers():
            ids.update(leg.held())
    return {"ids": sorted(ids)}


def held_by_workers() -> set[str] | None:
    """What every worker that answers within :data:`HELD_REPLY_TIMEOUT` holds; None when the
    question could not be sent."""
    from helixagent.celery import app

    try:
        replies = app.control.broadcast("helix_held", reply=True, timeout=HELD_REPLY_TIMEOUT)
    except Exception as exc:  # the mailbox goes through the router: its database or broker is away
        log.warning("migration.lost_held_unknown", extra={"error": str(exc)})
        return None
    held: set[str] = set()
    for reply in replies or []:
        for answer in reply.values():
            held.update((answer or {}).get("ids") or [])
    return held


def _copy_lost(broker: str, queue: str | None, empty_at: datetime, held: set[str]) -> int:
    """Give a PostgreSQL copy to the ``queued`` tasks published to ``broker`` (and ``queue``)
    before ``empty_at`` that no worker holds and that have no copy in PostgreSQL or the outbox."""

    def skip(ids: list[str]) -> set[str]:
        return held | set(OutboxMessage.objects.filter(task_id__in=ids).values_list("task_id", flat=True))

    moved = copy_batches(LOCK_KEY, lambda after: _candidates(broker, queue, empty_at, after), skip)
    if moved:
        log.warning(
            "migration.lost_copies_reenqueued",
            extra={"count": moved, "broker": broker, "queue": queue or "all", "empty_at": empty_at.isoformat()},
        )
    return moved


def _waiting(broker: str, queue: str | None, before: datetime) -> QuerySet[Task]:
    """Tasks still ``queued`` whose only copy went to ``broker`` (and ``queue``) before ``before``."""
    from tasks.models import Task

    waiting = Task.objects.filter(status="queued", published_to=broker, updated_at__lt=before)
    return waiting if queue is None else waiting.filter(queue=queue)


def _candidates(broker: str, queue: str | None, before: datetime, after: uuid.UUID | None) -> list[uuid.UUID]:
    waiting = _waiting(broker, queue, before)
    if after is not None:
        waiting = waiting.filter(pk__gt=after)
    return list(waiting.order_by("pk").values_list("pk", flat=True)[:BATCH])
