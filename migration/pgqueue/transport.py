"""kombu transport on a PostgreSQL queue table (SQLite for the embedded default).

Features:
    * claims with ``FOR UPDATE SKIP LOCKED``, in batches of up to ``claim_batch`` messages when
      the consumer's prefetch window has room for them;
    * ``LISTEN/NOTIFY`` wake-up, so an idle worker starts a new message at once; polling every
      ``polling_interval`` seconds remains as the safety net (SQLite only polls);
    * acknowledgement deletes the row, so the table holds only live messages; deletes are
      batched and applied before the consumer's next claim;
    * a visibility timeout: a claimed message is leased for ``visibility_timeout`` seconds and the
      consumer renews the lease while it holds it; a consumer that dies stops renewing, and the
      message is delivered again;
    * direct, topic and fanout exchanges with bindings stored in the database, so Celery events,
      ``celery inspect`` and Flower work across processes; queue TTL and expiry arguments
      (``x-message-ttl``, ``x-expires``) are honoured;
    * reconnection: database errors are connection errors, so Celery reconnects by itself.

Connection URL: ``pgqueue://``. The database comes from the transport options.

Transport options:
    * ``dsn`` -- ``postgresql://user:pass@host:port/db`` or ``sqlite:///path`` (required).
    * ``visibility_timeout`` -- lease of a claimed message in seconds (default 30).
    * ``claim_batch`` -- most messages claimed per round trip (default 10).
    * ``polling_interval`` -- longest wait between claims when idle, in seconds (default 1).
"""

from __future__ import annotations

import json
import select
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments

from helixagent.logging import get_logger
from migration import envelope
from migration.pgqueue.bell import Bell, ring_all
from migration.pgqueue.store import Claimed, QueueStore, Waiter, open_store, open_waiter

log = get_logger("pgqueue")
Empty = virtual.Empty
#: how often bindings are re-read from the database by a publishing process.
BINDINGS_TTL = 2.0
#: how often expired messages and abandoned queues are swept.
SWEEP_INTERVAL = 30.0
#: extra time an abandoned queue is kept beyond its ``x-expires``.
EXPIRY_GRACE = 60.0
#: longest time between two renewals of leases and queue liveness.
RENEW_INTERVAL = 10.0
#: a busy consuming loop deletes acknowledged rows this many at a time, or once the first has
#: waited ``ACK_WAIT`` seconds (an acknowledged row stays leased, so no one claims it meanwhile).
ACK_BATCH = 32
ACK_WAIT = 0.1
#: set once this process stops consuming for good (a worker's shutdown, see
#: :mod:`tasks.runner`): ``drain_events`` then delivers nothing more and returns at once. Celery's
#: blocking loop otherwise waits out up to two idle polls of two seconds before it stops.
stopping = threading.Event()


def stop_consuming() -> None:
    """Stop this process's consuming loops for good: set :data:`stopping` and wake every loop
    that waits for work, instead of letting it wait out its idle poll first."""
    stopping.set()
    ring_all()


#: whether the worker's pool can start one more task at once (:func:`deliver_while`); None: always
_pool_has_room: Callable[[], bool] | None = None


def deliver_while(has_room: Callable[[], bool] | None) -> None:
    """Deliver task messages only while ``has_room()`` (None: always).

    A prefork worker on a synchronous transport hands each delivered task to its pool at once,
    and waits there for a free process. Meanwhile its consuming loop does nothing else: no
    remote control (``celery inspect ping``, Flower, revocations) until a task ends. Held back,
    a message waits in the consumer's buffer instead, where a revocation still reaches it and a
    warm shutdown hands it back."""
    global _pool_has_room
    _pool_has_room = has_room


def row_id(delivery_tag: str) -> int:
    """The queue row of a delivery tag (``"<row id>.<delivery count>"``)."""
    return int(str(delivery_tag).split(".", 1)[0])


class QoS(virtual.QoS):
    """Acks delete the row; rejects and restores release the lease instead of copying the message."""

    def __init__(self, channel: Any, prefetch_count: int = 0) -> None:
        super().__init__(channel, prefetch_count)
        self._quick_ack = self._settled  # kombu's last step of every ack and reject

    def _settled(self, delivery_tag: str) -> None:
        """Runs in whichever thread settles the message; its slot of the prefetch window is free
        again, so a consuming loop that waits for one is woken."""
        self._dirty.add(delivery_tag)
        transport = self.channel.connection
        if transport is not None:  # None once the channel closed: no loop waits on it any more
            transport.room_freed()

    def can_consume(self) -> bool:
        """Room in the prefetch window and, on a channel that has one (Celery's task consumer;
        remote control and events have none), in the worker's pool (:func:`deliver_while`)."""
        if not super().can_consume():
            return False
        return not self.prefetch_count or _pool_has_room is None or _pool_has_room()

    def ack(self, delivery_tag: str) -> None:
        self.channel.ack_later(row_id(delivery_tag))
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel.store.release([row_id(delivery_tag)])
        else:
            self.channel.ack_later(row_id(delivery_tag))
        self._quick_ack(delivery_tag)

    def held_ids(self) -> list[int]:
        """Rows delivered to the application and not yet acknowledged."""
        return [row_id(tag) for tag in list(self._delivered) if tag not in self._dirty]

    def restore_unacked(self) -> list[Any]:
        self._flush()
        ids = self.held_ids()
        self._delivered.clear()
        if ids:
            try:
                self.channel.flush_acks()
                self.channel.store.release(ids)
            except Exception:  # the database is gone: the leases expire by themselves
                log.warning("pgqueue.release_failed", extra={"count": len(ids)})
        return []


class Channel(virtual.Channel):
    """One consumer/producer session on the queue tables."""

    QoS = QoS
    supports_fanout = True
    do_restore = True
    from_transport_options = (  # type: ignore[assignment]
        *virtual.Channel.from_transport_options,
        "dsn",
        "visibility_timeout",
        "claim_batch",
    )
    dsn: str = ""
    visibility_timeout: float = 30.0
    claim_batch: int = 10

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        if not self.dsn:
            raise ValueError("pgqueue transport needs the 'dsn' transport option")
        self.store: QueueStore = open_store(self.dsn)
        self._buffer: dict[str, deque[Claimed]] = {}
        self._queue_args: dict[str, dict[str, Any]] = {}
        self._no_ack: set[str] = set()
        self._bindings_at = 0.0
        self._bindings: dict[str, tuple[str, list[tuple[str, str, str]]]] = {}
        self._ttl: dict[str, float | None] = {}
        self._acked: list[int] = []
        self._acked_since = 0.0
        self._acked_lock = threading.Lock()

    # -- the kombu virtual contract ----------------------------------------------------------
    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        buffer = self._buffer.setdefault(queue, deque())
        while True:
            if not buffer:
                buffer.extend(self._claim(queue))
            message_id, _priority, payload, deliveries = buffer.popleft()
            try:
                message = envelope.read(payload)
            except envelope.Unreadable as exc:
                log.error(
                    "pgqueue.unreadable_message",
                    extra={"queue": queue, "id": message_id, "problem": str(exc), "sample": envelope.sample(payload)},
                )
                self.ack_later(message_id)  # delivered again, it would be passed over again
                continue
            message["properties"]["delivery_tag"] = f"{message_id}.{deliveries}"
            if deliveries > 1:
                message["redelivered"] = True
            return message

    def _claim(self, queue: str) -> list[Claimed]:
        """Claim as many rows of ``queue`` as the prefetch window has room for; raises Empty."""
        room = self.qos.can_consume_max_estimate()
        limit = self.claim_batch if room is None else min(self.claim_batch, room)
        if limit <= 0 or self.connection.is_idle(queue):
            raise Empty()
        rows = self.store.claim(queue, limit, self.visibility_timeout)
        if len(rows) < limit:
            self.connection.mark_idle(queue)
        if not rows:
            raise Empty()
        if queue in self._no_ack:
            self.store.ack([row[0] for row in rows])
        return rows

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        priority = int(message.get("properties", {}).get("priority") or 0)
        message_id = str((message.get("headers") or {}).get("id") or "")
        self.store.put(queue, priority, json.dumps(message), self._message_ttl(queue), message_id)

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any) -> None:
        for _rk, _pattern, queue in self.get_table(exchange):
            self._put(queue, message)

    def _size(self, queue: str) -> int:
        self.flush_acks()
        return self.store.size(queue)

    def _purge(self, queue: str) -> int:
        self._buffer.pop(queue, None)
        return self.store.purge(queue)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._buffer.pop(queue, None)
        self.store.delete_queue(queue)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True

    # -- declarations and bindings shared through the database --------------------------------
    def prepare_queue_arguments(self, arguments: dict[str, Any] | None, **kwargs: Any) -> dict[str, Any]:
        """Keep ``message_ttl`` and ``expires`` of kombu queues as ``x-message-ttl``/``x-expires``."""
        prepared: dict[str, Any] = to_rabbitmq_queue_arguments(arguments or {}, **kwargs)
        return prepared

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        result = super().queue_declare(queue=queue, passive=passive, **kwargs)
        self._queue_args[result.queue] = dict(kwargs.get("arguments") or {})
        return result

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        args = self._queue_args.get(queue, {})
        ttl, expires = args.get("x-message-ttl"), args.get("x-expires")
        self.store.bind(
            exchange,
            self.state.exchanges.get(exchange, {}).get("type", "direct"),
            routing_key,
            pattern or "",
            queue,
            ttl / 1000.0 if ttl else None,
            expires / 1000.0 if expires else None,
        )
        self._bindings_at = 0.0

    def queue_unbind(
        self, queue: str, exchange: str | None = None, routing_key: str = "", arguments: Any = None, **kwargs: Any
    ) -> None:
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        self.store.unbind(exchange or "amq.direct", routing_key, queue)
        self._bindings_at = 0.0

    def _shared_bindings(self) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
        if time.monotonic() - self._bindings_at > BINDINGS_TTL:
            table: dict[str, tuple[str, list[tuple[str, str, str]]]] = {}
            ttl: dict[str, float | None] = {}
            for exchange, kind, routing_key, pattern, queue, message_ttl in self.store.bindings():
                table.setdefault(exchange, (kind, []))[1].append((routing_key, pattern or None, queue))  # type: ignore[arg-type]
                ttl[queue] = message_ttl
            self._bindings, self._ttl, self._bindings_at = table, ttl, time.monotonic()
        return self._bindings

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        local = self.state.exchanges.get(exchange, {}).get("table", [])
        shared = self._shared_bindings().get(exchange, ("direct", []))[1]
        return list(dict.fromkeys([*map(tuple, local), *shared]))

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        if exchange in self.state.exchanges:
            return super().typeof(exchange, default)
        kind = self._shared_bindings().get(exchange, (default, []))[0]
        return self.exchange_types[kind]

    def _message_ttl(self, queue: str) -> float | None:
        ttl = self._queue_args.get(queue, {}).get("x-message-ttl")
        if ttl:
            return float(ttl) / 1000.0
        self._shared_bindings()
        return self._ttl.get(queue)

    # -- consuming ---------------------------------------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack.add(queue)
        self.connection.waiter.listen([queue])
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.store.ack([row_id(message.delivery_tag)])
        return message

    def ack_later(self, message_id: int) -> None:
        """Acknowledge a row; the DELETE is batched with others (see :meth:`flush_acks`)."""
        with self._acked_lock:
            if not self._acked:
                self._acked_since = time.monotonic()
            self._acked.append(message_id)

    def flush_acks(self, batched: bool = False) -> None:
        """Delete acknowledged rows in one statement: with ``batched``, only once ``ACK_BATCH``
        are waiting or the first has waited ``ACK_WAIT`` seconds (the consuming loop under load);
        without, at once (before the loop waits idle, at size queries and at close). A row whose
        DELETE is lost in a crash is delivered again and its task's claim finds nothing to do."""
        with self._acked_lock:
            if batched and len(self._acked) < ACK_BATCH and time.monotonic() - self._acked_since < ACK_WAIT:
                return
            ids, self._acked = self._acked, []
        if ids:
            self.store.ack(ids)

    def held_ids(self) -> list[int]:
        """Rows this channel holds: delivered and unacknowledged, or claimed and buffered."""
        buffered = self._buffered_ids()
        return self.qos.held_ids() + buffered if self._qos is not None else buffered

    def _buffered_ids(self) -> list[int]:
        return [row[0] for rows in self._buffer.values() for row in rows]

    def renew(self) -> None:
        """Extend the leases of held rows and mark consumed queues as alive."""
        ids = self.held_ids()
        if ids:
            self.store.extend(ids, self.visibility_timeout)
        self.store.touch(self._active_queues)

    def close(self) -> None:
        buffered = self._buffered_ids()
        self._buffer.clear()
        try:
            self.flush_acks()
            if buffered:
                self.store.release(buffered)
            super().close()
        except Exception:
            log.warning("pgqueue.close_failed", exc_info=True)
        finally:
            self.store.close()


class Transport(virtual.Transport):
    """The PostgreSQL queue transport; see the module docstring for its options."""

    Channel = Channel
    polling_interval = 1.0
    default_port = 5432  # type: ignore[assignment]
    driver_type = "pgqueue"  # not "sql": Celery turns events off for that driver type
    driver_name = "pgqueue"
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct", "topic", "fanout"])
    )
    connection_errors = (  # type: ignore[assignment]
        *virtual.Transport.connection_errors,
        psycopg.OperationalError,
        psycopg.InterfaceError,
        sqlite3.OperationalError,
    )
    channel_errors = (  # type: ignore[assignment]
        *virtual.Transport.channel_errors,
        psycopg.DatabaseError,
        sqlite3.DatabaseError,
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        self.dsn = str(options.get("dsn", ""))
        self.lease_interval = min(
            RENEW_INTERVAL, float(options.get("visibility_timeout", Channel.visibility_timeout)) / 3
        )
        self._waiter: Waiter | None = None
        self._bell: Bell | None = None
        self._idle: dict[str, float] = {}
        self._renewed_at = time.monotonic()
        self._swept_at = 0.0

    @property
    def waiter(self) -> Waiter:
        if self._waiter is None:
            self._waiter = open_waiter(self.dsn)
        return self._waiter

    @property
    def bell(self) -> Bell:
        if self._bell is None:
            self._bell = Bell()
        return self._bell

    def room_freed(self) -> None:
        """A delivered message was settled, from any thread: end a wait for room in the window."""
        if self._bell is not None:
            self._bell.ring()

    def is_idle(self, queue: str) -> bool:
        """Whether ``queue`` was found empty and nothing has been heard of it since.

        Saves a claim round trip per empty queue and loop; the mark lapses after
        ``polling_interval``, the safety net for a missed notification, a released lease or a
        lease that expired."""
        since = self._idle.get(queue)
        return since is not None and time.monotonic() - since < self.polling_interval

    def mark_idle(self, queue: str) -> None:
        if queue in self.waiter.queues:  # only queues a NOTIFY can wake again
            self._idle[queue] = time.monotonic()

    def _wake(self, queues: set[str]) -> None:
        for queue in queues:
            self._idle.pop(queue, None)

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        """Deliver one message; when there is none, wait for a NOTIFY rather than sleep."""
        started = time.monotonic()
        while True:
            self._maintain()
            if stopping.is_set():  # leave messages to the workers that stay; settle the acks
                for channel in self.channels:
                    channel.flush_acks()
                raise TimeoutError()
            self._wake(self.waiter.woken())
            self._arm_bell()
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[union-attr]
                return
            except Empty:
                for channel in self.channels:
                    channel.flush_acks()
                elapsed = time.monotonic() - started
                if timeout is not None and elapsed >= timeout:
                    raise TimeoutError() from None
                wait = self.polling_interval if timeout is None else min(self.polling_interval, timeout - elapsed)
                self._idle_wait(max(wait, 0.0))

    def _arm_bell(self) -> None:
        """Arm the bell, before a delivery is tried, while a consuming channel's prefetch window
        is full: nothing can be delivered until a task is settled, and a settle then ends the
        wait at once. A settle before the try frees its slot in time for the try itself."""
        self.bell.armed = not all(channel.qos.can_consume() for channel in self.channels if channel._consumers)

    def _idle_wait(self, wait: float) -> None:
        """Block until a NOTIFY, a ring of the bell or ``wait`` seconds (the router also waits
        on its brokers)."""
        self._select([self.waiter.fileno()], wait)
        self._wake(self.waiter.woken())

    def _select(self, sockets: list[int | None], wait: float) -> set[int]:
        """Wait up to ``wait`` seconds for one of ``sockets`` or the bell to be readable; return
        the readable sockets (all of them when one was closed under us: the next loop reconnects)."""
        fds = [fd for fd in sockets if fd is not None] + [self.bell.fileno()]
        try:
            readable = set(select.select(fds, [], [], wait)[0])
        except (OSError, ValueError):
            readable = set(fds)
        self.bell.clear()
        return readable

    def _maintain(self) -> None:
        for channel in self.channels:
            channel.flush_acks(batched=True)
        now = time.monotonic()
        if now - self._renewed_at >= self.lease_interval:
            self._renewed_at = now
            for channel in self.channels:
                channel.renew()
        if now - self._swept_at >= SWEEP_INTERVAL and self.channels:
            self._swept_at = now
            self.channels[0].store.sweep(EXPIRY_GRACE)

    def close_connection(self, connection: Any) -> None:
        try:
            super().close_connection(connection)
        finally:
            if self._waiter is not None:
                self._waiter.close()
                self._waiter = None
            if self._bell is not None:
                self._bell.close()
                self._bell = None

    def driver_version(self) -> str:
        return psycopg.__version__
