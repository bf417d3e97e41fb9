"""The Kafka leg against the real broker."""

from __future__ import annotations

import time
import uuid

from migration.legs.base import Empty
from migration.legs.kafka import KafkaLeg
from tests.conftest import require_env

QUEUE = "helixagent.tasks.background"
WAIT = 20.0


def test_a_wait_returns_with_the_first_message_instead_of_at_the_end_of_its_turn() -> None:
    leg = KafkaLeg(require_env("KAFKA_BOOTSTRAP_SERVERS"))
    try:
        leg.consume([QUEUE])
        task_id = str(uuid.uuid4())
        leg.publish(QUEUE, {"body": "{}", "headers": {"id": task_id}, "properties": {}})
        deadline = time.monotonic() + 3 * WAIT
        took = None
        while took is None and time.monotonic() < deadline:
            started = time.monotonic()
            leg.wait(WAIT)
            waited = time.monotonic() - started
            while True:  # take (and acknowledge) what arrived, leftovers of earlier runs included
                try:
                    message, tag = leg.fetch(QUEUE)
                except Empty:
                    break
                leg.ack(tag)
                if message["headers"]["id"] == task_id:
                    took = waited
        assert took is not None, "the published message never arrived"
        # joining the group takes a moment; waiting out the turn would take all of WAIT
        assert took < WAIT / 2, f"the wait that brought the message took {took:.1f} s"
    finally:
        leg.close()
