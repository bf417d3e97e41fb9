"""migrate-pending (SPEC §4): move tasks waiting in the PostgreSQL queue to the active broker.

Batch by batch, in one transaction each: lock up to ``batch_size`` waiting task messages
(``FOR UPDATE SKIP LOCKED``, so running workers keep claiming others), publish them to the broker
of ``messaging`` mode with confirms, delete them, mark their tasks migrated and count them. An
interruption rolls the open batch back: its messages stay in the PostgreSQL queue (some may also
be in the broker already; the claim on the task row runs a task once), so the command is
idempotent and safe to rerun. Messages leased by a worker (being executed) are left alone.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from helixagent.logging import get_logger
from migration import envelope, modes, state
from migration.exceptions import MigrationError
from migration.legs.base import Leg, LegUnavailable
from migration.models import MigrationState, QueueMessage
from tasks.routing import ALL_QUEUES

log = get_logger("migration.migrate_pending")


@dataclass
class Progress:
    migrated: int = 0
    failed: int = 0
    remaining: int = 0
    error: str = ""


def waiting() -> int:
    """Task messages in the PostgreSQL queue that no worker holds."""
    return QueueMessage.objects.filter(queue__in=ALL_QUEUES, visible_at__lte=time.time()).count()


def migrate_pending(
    batch_size: int = 2000, on_batch: Callable[[Progress], None] | None = None, workers: int = 2
) -> Progress:
    """Move every waiting task message to the broker; report migrated / failed / remaining.

    ``workers`` threads move batches side by side (``SKIP LOCKED`` keeps them apart), so one
    batch's database work overlaps another's publishing. Batches hold at most ``batch_size``
    messages and are of equal size, as many for each thread (:func:`even_batch_size`); the threads
    connect to the broker while the waiting messages are counted. A thread stops after a short
    batch, which took every message it could; ``remaining`` counts any that arrived since. On
    Ctrl-C the threads finish the batch they are in and stop."""
    snapshot = state.current(max_age=0)
    if snapshot.mode != modes.MESSAGING:
        raise MigrationError(
            f"migrate-pending moves tasks to the broker of messaging mode; the mode is {snapshot.mode}",
            {"mode": snapshot.mode},
        )
    progress = Progress()
    lock, stop, counted = threading.Lock(), threading.Event(), threading.Event()
    size = [batch_size]

    def drain() -> None:
        from migration.router import open_leg

        leg: Leg | None = None
        try:
            leg = open_leg(snapshot.broker)  # its own connection, opened while the count runs
            counted.wait()
            while not stop.is_set():
                taken, moved = _move_batch(leg, snapshot.broker, size[0])
                if taken:
                    with lock:
                        progress.migrated += moved
                        progress.remaining = max(0, progress.remaining - taken)
                        if on_batch:
                            on_batch(progress)
                if taken < size[0]:
                    return  # a short batch took every message no other thread holds
        except LegUnavailable as exc:
            stop.set()
            with lock:
                progress.failed += size[0]
                progress.error = str(exc)
            log.error("migration.migrate_pending_failed", extra={"error": str(exc)})
        finally:
            if leg is not None:
                _close(leg)
            connections.close_all()

    threads = [threading.Thread(target=drain, name=f"migrate-pending-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    try:
        progress.remaining = waiting()
        size[0] = even_batch_size(progress.remaining, batch_size, workers)
        counted.set()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:  # Ctrl-C, or the count failed
        stop.set()
        counted.set()
        for thread in threads:
            thread.join()
        raise
    progress.remaining = waiting()
    progress.failed = min(progress.failed, progress.remaining)
    log.info("migration.migrate_pending", extra={**progress.__dict__, "broker": snapshot.broker})
    return progress


def even_batch_size(waiting: int, batch_size: int, workers: int) -> int:
    """The size of equal batches, at most ``batch_size``, that give every thread as many of the
    ``waiting`` messages: otherwise the last batch can be moved by one thread while the others
    have nothing left (10,000 in batches of 2,000 on two threads: three turns, the last alone)."""
    if waiting <= 0:
        return batch_size
    turns = math.ceil(waiting / (batch_size * workers))
    return min(batch_size, math.ceil(waiting / (turns * workers)))


# One statement for what follows the confirms: drop the moved messages, mark their tasks migrated
# to the broker and count them. Arrays instead of IN lists: a batch is thousands of ids.
PG_MOVED = """
WITH moved AS (
    DELETE FROM helix_queue_message WHERE id = ANY(%(ids)s)
), marked AS (
    UPDATE helix_task SET migrated_at = %(now)s, published_to = %(broker)s WHERE id = ANY(%(tasks)s)
)
UPDATE helix_migration_state SET tasks_migrated = tasks_migrated + %(count)s WHERE id = 1
"""


def _close(leg: Leg) -> None:
    try:
        leg.close()
    except Exception:  # a connection the broker already dropped
        log.debug("migration.migrate_pending_close_failed", exc_info=True)


def _move_batch(leg: Leg, broker: str, batch_size: int) -> tuple[int, int]:
    """Move one batch in one transaction; returns how many messages it took (0: none left) and
    how many of them it moved. A message that cannot be read is not published: it goes with the
    batch, logged, as a consumer passes over it (:mod:`migration.envelope`)."""
    from tasks.models import Task

    with transaction.atomic():
        rows = list(
            QueueMessage.objects.select_for_update(skip_locked=True)
            .filter(queue__in=ALL_QUEUES, visible_at__lte=time.time())
            .order_by("id")
            .values_list("id", "queue", "payload", "message_id")[:batch_size]
        )
        if not rows:
            return 0, 0
        batch, tasks = [], []
        for row_id, queue, payload, message_id in rows:
            try:
                batch.append((queue, envelope.read(payload)))
            except envelope.Unreadable as exc:
                log.error(
                    "migration.migrate_pending_unreadable",
                    extra={"queue": queue, "id": row_id, "problem": str(exc), "sample": envelope.sample(payload)},
                )
                continue
            task = envelope.task_id(message_id)
            if task is not None:
                tasks.append(task)
        leg.publish_batch(batch)
        ids = [row[0] for row in rows]
        connection = transaction.get_connection()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    PG_MOVED, {"ids": ids, "tasks": tasks, "now": timezone.now(), "broker": broker, "count": len(batch)}
                )
        else:
            QueueMessage.objects.filter(id__in=ids).delete()
            Task.objects.filter(pk__in=tasks).update(migrated_at=timezone.now(), published_to=broker)
            MigrationState.objects.filter(pk=1).update(tasks_migrated=F("tasks_migrated") + len(batch))
    return len(rows), len(batch)
