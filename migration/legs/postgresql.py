"""The PostgreSQL leg: the queue table of :mod:`migration.pgqueue`, seen through the leg contract.

The router channel *is* a PostgreSQL queue channel (Celery's events and control messages always
travel there), so this leg borrows that channel's store, claim batching and acknowledgement
batching instead of opening connections of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kombu.transport import virtual

from migration.legs.base import Empty, Leg
from migration.pgqueue import transport as pgqueue


class PostgresLeg(Leg):
    name = "postgresql"

    def __init__(self, channel: pgqueue.Channel) -> None:
        self.channel = channel

    def publish(self, queue: str, message: dict[str, Any]) -> None:
        """Insert the message row; on the submitting process this joins the caller's transaction."""
        pgqueue.Channel._put(self.channel, queue, message)

    def consume(self, queues: Iterable[str]) -> None:
        """Nothing to do: the channel listens for its queues when Celery starts consuming them."""

    def fetch(self, queue: str) -> tuple[dict[str, Any], str]:
        try:
            message = pgqueue.Channel._get(self.channel, queue)
        except virtual.Empty:
            raise Empty() from None
        return message, str(message["properties"]["delivery_tag"])

    def ack(self, tag: str) -> None:
        self.channel.ack_later(pgqueue.row_id(tag))

    def requeue(self, tag: str) -> None:
        self.channel.store.release([pgqueue.row_id(tag)])

    def discard(self, tag: str) -> None:
        self.ack(tag)

    def flush(self) -> None:
        self.channel.flush_acks()

    def wait(self, timeout: float) -> None:
        transport = self.channel.connection
        transport._wake(transport.waiter.wait(timeout))

    def depth(self, queue: str) -> int:
        return self.channel.store.size(queue)

    def close(self) -> None:
        """The channel owns the store and closes it."""
