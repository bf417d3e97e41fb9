"""The RabbitMQ leg: py-amqp through kombu, with the topology of SPEC §5.

Topology (declared, idempotently, whenever the leg connects): the direct durable exchange
``helixagent.tasks`` bound to the five task queues by their names; each queue durable and
dead-lettered to the fanout exchange ``helixagent.dlx``, which feeds ``helixagent.dlq``.

Publishing: persistent messages in Celery's own wire format (an ordinary Celery worker could
read them), ``message_id`` = task id, with publisher confirms; a batch is published in one go
and its confirms awaited together. Consuming:
``basic_consume`` with a prefetch window; a message is acknowledged only when the router is told
the task ended, and a consumer that dies leaves its unacknowledged messages to RabbitMQ, which
delivers them again. A consuming connection has heartbeats (the router opens it with
``heartbeat`` and ticks :meth:`RabbitMQLeg.heartbeat`), so RabbitMQ also takes back the messages
of a consumer that hangs, or whose host vanishes, with its connection still open.

A broker under a resource alarm (memory or disk) stops reading from connections that publish
and tells them so (``connection.blocked``): the leg then refuses to publish at once, so the
router falls back to PostgreSQL copies instead of waiting out the alarm, and drops the
connection without the close handshake the broker would not read. Any other socket operation
that names no timeout of its own gives up after :data:`IO_TIMEOUT`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import amqp
from kombu import Connection

from migration.legs.amqp_frames import publish_frames
from migration.legs.base import (
    TASK_EXCHANGE,
    Empty,
    Leg,
    LegUnavailable,
    message_id,
    raw_body,
    virtual_message,
    wire_headers,
)
from tasks.routing import ALL_QUEUES

DLX = "helixagent.dlx"
DLQ = "helixagent.dlq"
QUEUE_ARGUMENTS = {"x-dead-letter-exchange": DLX}
CONFIRM_TIMEOUT = 10.0
#: seconds a socket operation without a timeout of its own may block (a write, an RPC's reply,
#: the close handshake).
IO_TIMEOUT = 10.0
#: messages per socket write when publishing a batch.
WRITE_EVERY = 64


class RabbitMQLeg(Leg):
    name = "rabbitmq"

    def __init__(self, url: str, prefetch: int = 100, connect_timeout: float = 5.0, heartbeat: float = 0.0) -> None:
        self.prefetch = prefetch
        self.blocked = ""  # why the broker blocks this connection's publishes, while it does
        self.conn = Connection(
            url,
            connect_timeout=connect_timeout,
            heartbeat=heartbeat,
            transport_options={"on_blocked": self._on_blocked, "on_unblocked": self._on_unblocked},
        )
        try:
            self.conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=connect_timeout)
            self.conn.connection.transport.sock.settimeout(IO_TIMEOUT)
            self.channel: Any = self.conn.channel()
            self.declare_topology(self.channel)
            self.channel.confirm_select()
            self.channel.events["basic_ack"].add(self._confirmed)
            self.channel.events["basic_nack"].add(self._refused)
            self.channel.events["basic_return"].add(self._returned_unrouted)
        except Exception as exc:
            self.conn.release()
            raise LegUnavailable(f"rabbitmq: {exc}") from exc
        self._published = 0  # publish sequence number of this channel (confirm mode counts from 1)
        self._unconfirmed: set[int] = set()
        self._confirmed_below = 1  # a ``multiple`` confirm has covered every lower sequence number
        self._nacked = False
        self._unrouted: list[str] = []  # routing keys of publishes no queue took (Basic.Return)
        self._buffers: dict[str, deque[amqp.Message]] = {}
        self._consuming: set[str] = set()
        self._done: list[tuple[str, int]] = []  # (action, delivery tag) from any thread
        self._done_lock = threading.Lock()

    @staticmethod
    def declare_topology(channel: Any) -> None:
        channel.exchange_declare(DLX, "fanout", durable=True, auto_delete=False)
        channel.queue_declare(DLQ, durable=True, auto_delete=False)
        channel.queue_bind(DLQ, DLX, "")
        channel.exchange_declare(TASK_EXCHANGE, "direct", durable=True, auto_delete=False)
        for queue in ALL_QUEUES:
            channel.queue_declare(queue, durable=True, auto_delete=False, arguments=QUEUE_ARGUMENTS)
            channel.queue_bind(queue, TASK_EXCHANGE, queue)

    def publish(self, queue: str, message: dict[str, Any]) -> None:
        self.publish_batch([(queue, message)])

    def publish_batch(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Publish every message, then wait for the broker's confirms of all of them at once
        (RabbitMQ acknowledges publishes in order, often several with one ``multiple`` ack).

        Messages are encoded (:mod:`migration.legs.amqp_frames`) and written :data:`WRITE_EVERY`
        at a time, so the broker works on the start of a large batch while the rest is still
        being encoded (``items`` may be a generator that decodes them)."""
        try:
            if not self.channel.is_open:
                raise LegUnavailable("rabbitmq: the channel is closed")
            if self.blocked:
                raise LegUnavailable(f"rabbitmq: the broker blocks publishing ({self.blocked})")
            connection = self.conn.connection
            frames: list[bytes] = []
            for queue, message in items:
                frames.append(self._frames(connection.frame_max, queue, message))
                if len(frames) == WRITE_EVERY:
                    self._write(frames)
                    frames = []
            if frames:
                self._write(frames)
            deadline = time.monotonic() + CONFIRM_TIMEOUT
            while self._unconfirmed and not self._nacked:
                if self.blocked:
                    raise LegUnavailable(f"rabbitmq: the broker blocks publishing ({self.blocked})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LegUnavailable(f"rabbitmq: {len(self._unconfirmed)} publishes not confirmed in time")
                try:
                    self.conn.drain_events(timeout=left)
                except TimeoutError:
                    continue
        except LegUnavailable:
            raise
        except Exception as exc:
            raise LegUnavailable(f"rabbitmq: {exc}") from exc
        finally:
            nacked, self._nacked = self._nacked, False
            unrouted, self._unrouted = self._unrouted, []
            self._unconfirmed.clear()
        if nacked:
            raise LegUnavailable("rabbitmq: the broker refused (nacked) a publish")
        if unrouted:  # a task queue was deleted: a new leg declares the topology again
            raise LegUnavailable(f"rabbitmq: no queue took {len(unrouted)} publish(es) to {sorted(set(unrouted))}")

    def _write(self, frames: list[bytes]) -> None:
        """Send encoded publishes in one write and number them as the channel does (from 1)."""
        self.conn.connection.transport.write(b"".join(frames))
        first = self._published + 1
        self._published += len(frames)
        self._unconfirmed.update(range(first, self._published + 1))

    def _confirmed(self, tag: int, multiple: bool) -> None:
        if multiple:  # every publish up to ``tag``: each sequence number is visited once
            for seq in range(self._confirmed_below, tag + 1):
                self._unconfirmed.discard(seq)
            self._confirmed_below = max(self._confirmed_below, tag + 1)
        else:
            self._unconfirmed.discard(tag)

    def _on_blocked(self, reason: str) -> None:
        self.blocked = reason or "blocked"

    def _on_unblocked(self) -> None:
        self.blocked = ""

    def _returned_unrouted(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        """A mandatory publish that no queue took. RabbitMQ would confirm it all the same and drop
        it, and its task would wait ``queued`` for good; the return comes before the confirm."""
        self._unrouted.append(routing_key)

    def _refused(self, tag: int, multiple: bool) -> None:
        self._nacked = True
        self._confirmed(tag, multiple)

    def _frames(self, frame_max: int, queue: str, message: dict[str, Any]) -> bytes:
        """A publish in Celery's own wire format: an ordinary Celery worker could consume it."""
        props = message.get("properties", {})
        properties = {
            "content_type": message.get("content-type"),
            "content_encoding": message.get("content-encoding"),
            "application_headers": wire_headers(message),
            "delivery_mode": 2,
            "priority": props.get("priority") or 0,
            "correlation_id": props.get("correlation_id"),
            "reply_to": props.get("reply_to"),
            "message_id": message_id(message),
        }
        return publish_frames(
            self.channel.channel_id, frame_max, TASK_EXCHANGE, queue, raw_body(message), properties, mandatory=True
        )

    def consume(self, queues: Iterable[str]) -> None:
        new = [queue for queue in queues if queue not in self._consuming]
        if not new:
            return
        self.channel.basic_qos(0, self.prefetch, False)
        for queue in new:
            buffer = self._buffers.setdefault(queue, deque())
            self.channel.basic_consume(queue, callback=buffer.append, no_ack=False)
            self._consuming.add(queue)

    def fetch(self, queue: str) -> tuple[dict[str, Any], str]:
        buffer = self._buffers.get(queue)
        if not buffer:
            self.wait(0)
            buffer = self._buffers.get(queue)
            if not buffer:
                raise Empty()
        wire = buffer.popleft()
        props = wire.properties
        headers = props.get("application_headers") or {}
        message = virtual_message(
            wire.body if isinstance(wire.body, bytes) else wire.body.encode(), headers, props, queue
        )
        if wire.delivery_info.get("redelivered"):
            message["redelivered"] = True
        return message, str(wire.delivery_tag)

    def held(self) -> list[str]:
        """RabbitMQ counts these as neither ready nor gone: delivered, not acknowledged."""
        return [
            str((wire.properties.get("application_headers") or {}).get("id", ""))
            for buffer in self._buffers.values()
            for wire in buffer
        ]

    def ack(self, tag: str) -> None:
        self._later("ack", tag)

    def requeue(self, tag: str) -> None:
        self._later("requeue", tag)

    def discard(self, tag: str) -> None:
        """Reject without requeue: RabbitMQ dead-letters the message to ``helixagent.dlq``."""
        self._later("discard", tag)

    def _later(self, action: str, tag: str) -> None:
        with self._done_lock:
            self._done.append((action, int(tag)))

    def flush(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        try:
            for action, tag in done:
                if action == "ack":
                    self.channel.basic_ack(tag)
                else:
                    self.channel.basic_reject(tag, requeue=action == "requeue")
        except Exception as exc:
            raise LegUnavailable(f"rabbitmq: {exc}") from exc

    def wait(self, timeout: float) -> None:
        """Read what the broker has sent; block up to ``timeout`` for the first frame."""
        try:
            self.conn.drain_events(timeout=timeout)
            for _ in range(self.prefetch):  # then take what is already there without blocking
                self.conn.drain_events(timeout=0)
        except TimeoutError:
            pass
        except Exception as exc:
            raise LegUnavailable(f"rabbitmq: {exc}") from exc

    def heartbeat(self) -> None:
        """Send a heartbeat when one is due; raise if the broker's have stopped coming."""
        if not self.conn.heartbeat:
            return
        try:
            self.conn.heartbeat_check()
        except Exception as exc:
            raise LegUnavailable(f"rabbitmq: {exc}") from exc

    def fileno(self) -> int | None:
        sock = getattr(self.conn.connection, "sock", None)
        return int(sock.fileno()) if sock is not None else None

    def depth(self, queue: str) -> int:
        _name, count, _consumers = self.channel.queue_declare(
            queue, passive=True, durable=True, auto_delete=False, arguments=QUEUE_ARGUMENTS
        )
        return int(count)

    def close(self) -> None:
        try:
            self.flush()
        except LegUnavailable:
            pass
        finally:
            self._buffers.clear()
            if self.blocked:
                self.conn.collect()  # the broker would not read the close handshake
            else:
                self.conn.release()  # the handshake waits at most IO_TIMEOUT
