"""Waiting tasks that no worker would receive, and the PostgreSQL copy that saves each of them.

A task waits for a worker as ``queued``; its row's ``published_to`` names where its copies went.
Workers consume PostgreSQL and the brokers of the current mode (and, until they restart, the
brokers they already hold open). A task whose every copy sits in a broker the current mode does
not consume is *stranded*: after a rollback (SPEC §4), after ``messaging`` on Kafka gives way to
``dual_write``, after ``messaging.broker`` changes, or when a process published under the
previous mode in the second before it saw a switch.

:func:`reenqueue` gives each stranded task a PostgreSQL copy. It runs after every mode change
and, as the safety net, every few seconds in every worker. A copy it adds next to one that is
still consumed somewhere is harmless: the claim runs a task once.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable

from django.db import connection, transaction
from django.db.models import Q

from helixagent.logging import get_logger
from migration import modes, state
from migration.models import QueueMessage

log = get_logger("migration.stranded")
BATCH = 500
#: seconds between two sweeps of a worker.
SWEEP_EVERY = 5.0
BROKERS = (modes.RABBITMQ, modes.KAFKA)
#: PostgreSQL advisory lock held while a batch is found and re-enqueued, so two processes do not
#: both copy the same task (the second finds the first one's copies once it gets the lock).
LOCK_KEY = zlib.crc32(b"helixagent.migration.stranded")


def reenqueue() -> int:
    """Give every stranded task a PostgreSQL copy; returns how many were given one."""
    snapshot = state.current()
    consumed = set(modes.consume_legs(snapshot.mode, snapshot.broker))
    moved = copy_batches(LOCK_KEY, lambda after: _candidates(consumed, after))
    if moved:
        log.warning("migration.reenqueued", extra={"count": moved, "mode": snapshot.mode, "broker": snapshot.broker})
    return moved


def copy_batches(
    lock_key: int,
    candidates: Callable[[uuid.UUID | None], list[uuid.UUID]],
    skip: Callable[[list[str]], set[str]] = lambda ids: set(),
) -> int:
    """Give a PostgreSQL copy to each task ``candidates(after)`` names, batch after batch (by
    id, after the last of the previous batch), unless it has one already or ``skip`` names it.
    Each batch is found and copied under the advisory lock ``lock_key``, so two workers do not
    both copy a task: the second finds the first one's copies. Returns how many were copied."""
    from tasks import service

    moved, after = 0, None
    while True:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key])
            batch = candidates(after)
            if not batch:
                return moved
            after = batch[-1]
            ids = [str(pk) for pk in batch]
            copied = skip(ids)
            copied |= set(QueueMessage.objects.filter(message_id__in=ids).values_list("message_id", flat=True))
            moved += service.reenqueue([pk for pk in ids if pk not in copied])


def _candidates(consumed: set[str], after: uuid.UUID | None) -> list[uuid.UUID]:
    """The next batch of ``queued`` tasks published to a broker, to none of those ``consumed``
    (whether they also have a PostgreSQL copy is checked by the caller)."""
    from tasks.models import Task

    lost = [broker for broker in BROKERS if broker not in consumed]
    if not lost:
        return []
    waiting = Task.objects.filter(status="queued")
    waiting = waiting.filter(Q.create([("published_to__contains", broker) for broker in lost], connector=Q.OR))
    for broker in consumed - {modes.POSTGRESQL}:
        waiting = waiting.exclude(published_to__contains=broker)
    if after is not None:
        waiting = waiting.filter(pk__gt=after)
    return list(waiting.order_by("pk").values_list("pk", flat=True)[:BATCH])
