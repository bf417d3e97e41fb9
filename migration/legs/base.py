"""The contract every leg of the router keeps (PostgreSQL queue, RabbitMQ, Kafka).

Messages cross the contract in kombu's virtual-transport form (a dict with ``body``,
``headers`` and ``properties``), so the router hands them to Celery without caring where they
came from. Threading: :meth:`Leg.ack` and :meth:`Leg.requeue` may be called from any thread
(a threads-pool worker acknowledges from its pool threads); everything else is called from the
consuming thread only, which also calls :meth:`Leg.flush` to put the acknowledgements on the wire.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

#: the direct exchange every task queue is bound to, on RabbitMQ as on the PostgreSQL queue.
TASK_EXCHANGE = "helixagent.tasks"


class Empty(Exception):
    """The leg has no message for that queue right now."""


class LegUnavailable(Exception):
    """The leg's broker cannot be reached; the router retries it later."""


class Leg(ABC):
    """One place task messages are published to and consumed from."""

    name: ClassVar[str]

    @abstractmethod
    def publish(self, queue: str, message: dict[str, Any]) -> None:
        """Store ``message`` for ``queue``; returns once the broker has confirmed it."""

    def publish_batch(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Publish ``(queue, message)`` pairs; returns once the broker has confirmed all of them,
        or raises :class:`LegUnavailable` (some may have been stored: a copy published twice is
        harmless, the claim on the task row runs a task once). Brokers that can pipeline
        confirms override this."""
        for queue, message in items:
            self.publish(queue, message)

    @abstractmethod
    def consume(self, queues: Iterable[str]) -> None:
        """Start receiving messages of ``queues`` (more calls add queues)."""

    @abstractmethod
    def fetch(self, queue: str) -> tuple[dict[str, Any], str]:
        """The next received message of ``queue`` and the leg's tag for it, or :class:`Empty`."""

    @abstractmethod
    def ack(self, tag: str) -> None:
        """The message is done with: never deliver it again."""

    @abstractmethod
    def requeue(self, tag: str) -> None:
        """Deliver the message again (to this or another consumer)."""

    @abstractmethod
    def discard(self, tag: str) -> None:
        """The message cannot be processed: drop it (dead-letter it where the broker can)."""

    def held(self) -> list[str]:
        """Task ids of the messages received from the broker and not yet fetched (a prefetch
        window). A broker that counts them as waiting, as Kafka's lag does, needs no override."""
        return []

    @abstractmethod
    def flush(self) -> None:
        """Send acknowledgements queued by other threads; called by the consuming thread."""

    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds or until a message may have arrived."""

    def fileno(self) -> int | None:
        """A socket that becomes readable when a message may have arrived, if the client has one
        (the router then waits on it together with PostgreSQL's NOTIFY connection)."""
        return None

    def heartbeat(self) -> None:
        """Called about once a second while the leg consumes: keep the broker seeing this
        client alive, and raise :class:`LegUnavailable` if the broker has gone silent. Legs
        whose client keeps its connections alive itself (Kafka, PostgreSQL) do nothing."""
        return None

    @abstractmethod
    def depth(self, queue: str) -> int:
        """Messages of ``queue`` the broker still holds (ready, not yet delivered)."""

    @abstractmethod
    def close(self) -> None: ...


def message_id(message: dict[str, Any]) -> str:
    """The task id of a Celery message (protocol 2 header ``id``), used as the broker message id."""
    headers = message.get("headers") or {}
    return str(headers.get("id") or message.get("properties", {}).get("correlation_id") or "")


# Celery protocol-2 headers that a Celery worker reads with exactly this default when they are
# absent (``celery.worker.request`` and ``celery.worker.strategy``). The AMQP header table is
# the larger part of a publish's cost, in py-amqp and in RabbitMQ alike, so a broker copy leaves
# them out, along with every header whose value is None.
CELERY_HEADER_DEFAULTS: dict[str, Any] = {
    "retries": 0,
    "replaced_task_nesting": 0,
    "stamps": {},
    "stamped_headers": [],
    "timelimit": [None, None],
}


def wire_headers(message: dict[str, Any]) -> dict[str, Any]:
    """The headers a broker copy carries: those a Celery worker cannot do without."""
    return {
        key: value
        for key, value in (message.get("headers") or {}).items()
        if value is not None and (key not in CELERY_HEADER_DEFAULTS or CELERY_HEADER_DEFAULTS[key] != value)
    }


def raw_body(message: dict[str, Any]) -> bytes:
    """The message body as bytes (the virtual transport keeps it base64-encoded)."""
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        return base64.b64decode(body)
    return body.encode() if isinstance(body, str) else bytes(body)


def virtual_message(
    body: bytes,
    headers: dict[str, Any],
    properties: dict[str, Any],
    queue: str,
) -> dict[str, Any]:
    """Rebuild the virtual-transport form of a message received from a broker."""
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": properties.get("content_encoding") or "utf-8",
        "content-type": properties.get("content_type") or "application/json",
        "headers": dict(headers or {}),
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": TASK_EXCHANGE, "routing_key": queue},
            "priority": properties.get("priority") or 0,
            "correlation_id": properties.get("correlation_id"),
            "reply_to": properties.get("reply_to"),
            "delivery_mode": 2,
        },
    }
