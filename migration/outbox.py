"""The transactional outbox of broker copies (SPEC §4, Consistency).

A broker copy is written to ``helix_outbox`` in the transaction that inserts its task row. After
commit it is handed to this process's :class:`Publisher`, a thread that publishes what has
accumulated in one batch per broker with pipelined confirms, and deletes the records of confirmed
copies many at a time (:data:`FORGET_EVERY`); a batch the broker does not confirm falls back to
PostgreSQL copies (see :meth:`migration.router.Channel.publish_batch`). The submitting request
does not wait for the broker. :func:`relay`, run by every worker's maintenance loop, publishes records older than
:data:`GRACE` seconds: those whose process died between commit and publish. A copy published
twice is harmless (the claim on the task row runs a task once).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections, connection, connections, transaction
from django.utils import timezone

from helixagent.logging import get_logger
from migration.models import OutboxMessage

if TYPE_CHECKING:
    from kombu import Producer

    from migration.gather import Statement
    from migration.router import Channel

log = get_logger("migration.outbox")
#: how old a record must be before the relay takes it over from its publisher.
GRACE = timedelta(seconds=5)


def record(leg: str, queue: str, task_id: str, payload: str) -> int:
    """Store a broker copy in the caller's transaction; returns the record id."""
    return OutboxMessage.objects.create(leg=leg, queue=queue, task_id=task_id, payload=payload).pk


def record_in(statement: Statement, leg: str, queue: str, task_id: str, payload: str) -> str:
    """Add a broker copy's record to a gathered statement; returns the member that yields its id."""
    return statement.insert(OutboxMessage(leg=leg, queue=queue, task_id=task_id, payload=payload), returning=True)


def done(record_ids: list[int]) -> None:
    """Drop published records: one plain DELETE (the ORM's delete() adds a transaction and signals)."""
    if record_ids:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM helix_outbox WHERE id IN ({', '.join(['%s'] * len(record_ids))})", record_ids)


def relay(channel: Channel, limit: int = 500) -> int:
    """Publish records left behind by their publishers; returns how many were sent."""
    sent = 0
    with transaction.atomic():
        stale = OutboxMessage.objects.select_for_update(skip_locked=True).filter(created_at__lt=timezone.now() - GRACE)
        entries = list(stale.order_by("id")[:limit])
        for leg in {entry.leg for entry in entries}:
            batch = [entry for entry in entries if entry.leg == leg]
            channel.publish_batch(leg, [(entry.queue, json.loads(entry.payload)) for entry in batch])
            done([entry.pk for entry in batch])
            sent += len(batch)
    if sent:
        log.warning("migration.outbox_relayed", extra={"count": sent})
    return sent


Item = tuple[int, str, str, dict[str, Any]]  # outbox record id, leg, queue, message


class Publisher:
    """This process's background publisher of committed broker copies (one thread per process;
    a forked child starts its own, and a thread that died of an unexpected error is replaced at
    the next hand-over, so copies never wait on a dead thread for the relay)."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.pid = 0
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.pending = 0  # handed over and not yet published (or given up to the relay)

    def send(self, record_id: int, leg: str, queue_name: str, message: dict[str, Any]) -> None:
        with self.lock:
            if self.pid != os.getpid():
                self.pid = os.getpid()
                self.items = queue.SimpleQueue()
                self.thread = None
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="helix-outbox", daemon=True)
                self.thread.start()
            self.pending += 1
        self.items.put((record_id, leg, queue_name, message))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything handed over so far is published; True if it was in time."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.pending

    def _run(self) -> None:
        from tasks.service import producer

        try:
            with producer() as current:  # held for the thread's life, and with it its broker connections
                self._loop(current)
        except Exception:
            log.exception("migration.outbox_publisher_died")  # the next send starts another

    def _loop(self, producer: Producer) -> None:
        published: list[int] = []  # records whose copies the broker confirmed, not yet deleted
        forgotten_at, sent_at = time.monotonic(), 0.0  # the first copy leaves at once
        while True:
            try:
                first = self.items.get(timeout=FORGET_EVERY if published else IDLE_CLOSE)
            except queue.Empty:
                if published:  # quiet: drop what was published, then wait again
                    published, forgotten_at = self._forget(published), time.monotonic()
                    continue
                connections.close_all()  # idle: give this thread's database connection back
                first = self.items.get()
            wait = sent_at + BATCH_INTERVAL - time.monotonic()
            if wait > 0:  # copies are streaming in: let this batch fill instead of sending one more alone
                time.sleep(wait)
            batch = [first]
            while len(batch) < BATCH_SIZE:
                try:
                    batch.append(self.items.get_nowait())
                except queue.Empty:
                    break
            try:
                for leg in {item[1] for item in batch}:
                    chosen = [item for item in batch if item[1] == leg]
                    producer.channel.publish_batch(leg, [(item[2], item[3]) for item in chosen])
                    published.extend(item[0] for item in chosen)
                sent_at = time.monotonic()
                if len(published) >= BATCH_SIZE or time.monotonic() - forgotten_at >= FORGET_EVERY:
                    published, forgotten_at = self._forget(published), time.monotonic()
            except Exception as exc:  # the records stay in the outbox: the relay sends them
                log.error("migration.outbox_publish_failed", extra={"count": len(batch), "error": str(exc)})
                close_old_connections()
            finally:
                with self.lock:
                    self.pending -= len(batch)

    @staticmethod
    def _forget(published: list[int]) -> list[int]:
        """Delete the records of confirmed copies; returns what is left to delete (on failure, all)."""
        try:
            done(published)
        except Exception as exc:  # kept: a later turn deletes them, or the relay sends them again
            log.warning("migration.outbox_delete_failed", extra={"count": len(published), "error": str(exc)})
            close_old_connections()
            return published
        return []


#: most copies published in one batch.
BATCH_SIZE = 500
#: seconds at least from one batch to the next. A copy that finds the publisher idle leaves at
#: once; under a steady stream, copies wait up to this long and leave together. The broker then
#: writes (and, for RabbitMQ, syncs to disk before confirming) a batch instead of each copy alone,
#: which costs it a fraction of the CPU. librdkafka's ``linger.ms`` (5 by default) trades latency for
#: batches the same way, but holds every message, not only those that follow a batch closely.
BATCH_INTERVAL = 0.005
#: seconds at most between publishing a copy and deleting its record. Deleting many records in
#: one statement saves a commit per task; a record that outlives its publisher makes the relay
#: send one more copy, which the claim on the task row makes harmless.
FORGET_EVERY = 0.2
#: seconds without work after which the publisher closes its database connection.
IDLE_CLOSE = 2.0
publisher = Publisher()
atexit.register(publisher.flush, 10.0)
