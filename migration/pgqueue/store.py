"""Database access of the queue transport, behind one small contract with two dialects.

:class:`PostgresStore` is the real queue: concurrent claims with ``SKIP LOCKED``, wake-ups by
``LISTEN/NOTIFY`` on a connection of its own. :class:`SqliteStore` serves the embedded default
(one machine, polling). Both keep every statement in :mod:`migration.pgqueue.sql`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from migration.pgqueue import sql

Binding = tuple[str, str, str, str, str, float | None]  # exchange, type, routing_key, pattern, queue, ttl
Claimed = tuple[int, int, str, int]  # id, priority, payload, delivery_count


class QueueStore(ABC):
    """What the transport needs from the database.

    Guarantees: :meth:`claim` hands a message to one caller at a time until its lease
    (``visible_at``) passes; :meth:`ack` deletes it; :meth:`release` makes it claimable now.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()

    @abstractmethod
    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one shared statement (``%s`` placeholders) and return its rows, if any."""

    @abstractmethod
    def put(self, queue: str, priority: int, payload: str, ttl: float | None, message_id: str = "") -> None:
        """Insert a message; ``message_id`` (Celery's task id) lets a task's copies be found."""

    @abstractmethod
    def claim(self, queue: str, limit: int, lease: float) -> list[Claimed]: ...

    @abstractmethod
    def ack(self, ids: Sequence[int]) -> None: ...

    @abstractmethod
    def release(self, ids: Sequence[int]) -> None: ...

    @abstractmethod
    def extend(self, ids: Sequence[int], lease: float) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- shared statements ------------------------------------------------------------------
    def size(self, queue: str) -> int:
        return int(self.execute(sql.SIZE, (queue, time.time()))[0][0])

    def purge(self, queue: str) -> int:
        count = self.size(queue)
        self.execute(sql.PURGE, (queue,))
        return count

    def delete_queue(self, queue: str) -> None:
        self.execute(sql.PURGE, (queue,))
        self.execute(sql.DELETE_BINDINGS, (queue,))

    def bind(
        self,
        exchange: str,
        kind: str,
        routing_key: str,
        pattern: str,
        queue: str,
        ttl: float | None,
        expires: float | None,
    ) -> None:
        self.execute(sql.BIND, (exchange, kind, routing_key, pattern, queue, ttl, expires, time.time()))

    def unbind(self, exchange: str, routing_key: str, queue: str) -> None:
        self.execute(sql.UNBIND, (exchange, routing_key, queue))

    def bindings(self) -> list[Binding]:
        return [tuple(row) for row in self.execute(sql.BINDINGS)]

    def touch(self, queues: Iterable[str]) -> None:
        now = time.time()
        for queue in queues:
            self.execute(sql.TOUCH_BINDINGS, (now, queue))

    def sweep(self, grace: float) -> None:
        """Drop expired messages, and queues (with their bindings) no consumer has touched for
        their ``x-expires`` plus ``grace`` seconds (consumers touch theirs every few seconds)."""
        now = time.time()
        self.execute(sql.DROP_EXPIRED_MESSAGES, (now,))
        for (queue,) in self.execute(sql.EXPIRED_QUEUES, (now - grace,)):
            self.delete_queue(queue)


class PostgresStore(QueueStore):
    """The queue on PostgreSQL, through psycopg 3 in autocommit mode."""

    def __init__(self, dsn: str, connect_timeout: float = 5.0) -> None:
        super().__init__()
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=int(connect_timeout))

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock, self.conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def put(self, queue: str, priority: int, payload: str, ttl: float | None, message_id: str = "") -> None:
        now = time.time()
        self.execute(sql.PG_PUT, (queue, priority, payload, now, now + ttl if ttl else None, now, message_id))

    def claim(self, queue: str, limit: int, lease: float) -> list[Claimed]:
        now = time.time()
        with self.lock, self.conn.cursor() as cur:
            cur.execute(sql.PG_CLAIM, {"queue": queue, "now": now, "lease": now + lease, "limit": limit})
            rows: list[Claimed] = cur.fetchall()
        return sorted(rows, key=lambda row: (-row[1], row[0]))

    def ack(self, ids: Sequence[int]) -> None:
        self.execute(sql.PG_ACK, (list(ids),))

    def release(self, ids: Sequence[int]) -> None:
        self.execute(sql.PG_RELEASE, (time.time(), list(ids)))

    def extend(self, ids: Sequence[int], lease: float) -> None:
        now = time.time()
        self.execute(sql.PG_EXTEND, (now + lease, list(ids), now))

    def close(self) -> None:
        self.conn.close()


class SqliteStore(QueueStore):
    """The embedded fallback: one SQLite file, polled (SQLite has no NOTIFY)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.conn.execute(statement.replace("%s", "?"), tuple(params)).fetchall()

    def _ids(
        self, statement: str, ids: Sequence[int], before: tuple[Any, ...] = (), after: tuple[Any, ...] = ()
    ) -> None:
        marks = ",".join("?" * len(ids))
        with self.lock:
            self.conn.execute(statement.format(ids=marks), (*before, *ids, *after))

    def put(self, queue: str, priority: int, payload: str, ttl: float | None, message_id: str = "") -> None:
        now = time.time()
        with self.lock:
            self.conn.execute(
                sql.SQLITE_PUT, (queue, priority, payload, now, now + ttl if ttl else None, now, message_id)
            )

    def claim(self, queue: str, limit: int, lease: float) -> list[Claimed]:
        now = time.time()
        with self.lock:
            rows = self.conn.execute(
                sql.SQLITE_CLAIM, {"queue": queue, "now": now, "lease": now + lease, "limit": limit}
            ).fetchall()
        return sorted(rows, key=lambda row: (-row[1], row[0]))

    def ack(self, ids: Sequence[int]) -> None:
        self._ids(sql.SQLITE_ACK, ids)

    def release(self, ids: Sequence[int]) -> None:
        self._ids(sql.SQLITE_RELEASE, ids, before=(time.time(),))

    def extend(self, ids: Sequence[int], lease: float) -> None:
        now = time.time()
        self._ids(sql.SQLITE_EXTEND, ids, before=(now + lease,), after=(now,))

    def close(self) -> None:
        self.conn.close()


class TransactionStore(QueueStore):
    """Publishes through Django's connection, inside whatever transaction the caller holds.

    Selected with ``dsn="django"``. The message row then commits or rolls back together with the
    task row it belongs to, so a task is never committed without its message (nor the reverse).
    It only publishes and declares; consumers use :class:`PostgresStore`.
    """

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []

    def put(self, queue: str, priority: int, payload: str, ttl: float | None, message_id: str = "") -> None:
        from migration import gather

        now = time.time()
        params = (queue, priority, payload, now, now + ttl if ttl else None, now, message_id)
        statement = gather.current()
        if statement is not None:
            statement.add(sql.PG_PUT, params)
        else:
            self.execute(sql.PG_PUT, params)

    def claim(self, queue: str, limit: int, lease: float) -> list[Claimed]:
        raise NotImplementedError("the transaction store only publishes")

    def ack(self, ids: Sequence[int]) -> None:
        raise NotImplementedError("the transaction store only publishes")

    def release(self, ids: Sequence[int]) -> None:
        raise NotImplementedError("the transaction store only publishes")

    def extend(self, ids: Sequence[int], lease: float) -> None:
        raise NotImplementedError("the transaction store only publishes")

    def close(self) -> None:
        """Django owns the connection."""


class Waiter:
    """How an idle consumer learns of new messages: here, by sleeping (the polling fallback).

    ``queues`` are the queues it hears about; a queue outside it must be polled.
    """

    queues: frozenset[str] = frozenset()

    def listen(self, queues: Iterable[str]) -> None:
        """Subscribe to wake-ups for ``queues``."""

    def wait(self, timeout: float) -> set[str]:
        """Block until a wake-up arrives or ``timeout`` passes; return the queues woken."""
        time.sleep(timeout)
        return set()

    def woken(self) -> set[str]:
        """Queues woken since the last call, without blocking."""
        return set()

    def fileno(self) -> int | None:
        """A socket that becomes readable when a wake-up arrives, if there is one."""
        return None

    def close(self) -> None:
        """Release the waiter's resources."""


class NotifyWaiter(Waiter):
    """Waits on PostgreSQL ``LISTEN`` on a connection of its own; the trigger of
    :data:`~migration.pgqueue.sql.PG_NOTIFY_TRIGGER` notifies at every committed insert.

    A notification that arrives while nobody waits stays in the connection and ends the next
    wait at once, so a wake-up is not lost between a failed claim and the wait.
    """

    def __init__(self, dsn: str, connect_timeout: float = 5.0) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=int(connect_timeout))
        self.channels: dict[str, set[str]] = {}  # channel -> queues
        self.queues = frozenset()

    def listen(self, queues: Iterable[str]) -> None:
        for queue in set(queues) - self.queues:
            channel = sql.notify_channel(queue)
            if channel not in self.channels:
                self.conn.execute(f'LISTEN "{channel}"')
            self.channels.setdefault(channel, set()).add(queue)
            self.queues = self.queues | {queue}

    def _queues(self, timeout: float, stop_after: int | None) -> set[str]:
        woken: set[str] = set()
        for notify in self.conn.notifies(timeout=timeout, stop_after=stop_after):
            woken |= self.channels.get(notify.channel, set())
        return woken

    def wait(self, timeout: float) -> set[str]:
        return self._queues(timeout, 1) | self.woken()

    def woken(self) -> set[str]:
        return self._queues(0.0, None)

    def fileno(self) -> int | None:
        return int(self.conn.fileno())

    def close(self) -> None:
        self.conn.close()


def _is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgres://", "postgresql://"))


def open_waiter(dsn: str) -> Waiter:
    """A NOTIFY waiter on PostgreSQL, a sleeping one elsewhere."""
    return NotifyWaiter(dsn) if _is_postgres(dsn) else Waiter()


def open_store(dsn: str) -> QueueStore:
    """A store for ``dsn``: ``postgresql://…``, ``sqlite:///path`` or ``django`` (publish only)."""
    if dsn == "django":
        return TransactionStore()
    if _is_postgres(dsn):
        return PostgresStore(dsn)
    if dsn.startswith("sqlite:///"):
        return SqliteStore(dsn.removeprefix("sqlite:///"))
    raise ValueError(f"queue dsn must start with postgresql:// or sqlite:///, got {dsn!r}")
