"""The Kafka leg against the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from migration.legs.base import Empty
from migration.legs.kafka import KafkaLeg, ensure_topics
from tests.conftest import kafka_frozen, require_env, wait_for

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


def take(leg: KafkaLeg, wanted: set[str], timeout: float = 60.0) -> dict[str, str]:
    """Wait for the messages of these ids; return their tags, unacknowledged. Any other message
    (a leftover of an earlier run) is acknowledged."""
    tags: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while set(tags) != wanted and time.monotonic() < deadline:
        leg.wait(1.0)
        while True:
            try:
                message, tag = leg.fetch(QUEUE)
            except Empty:
                break
            if message["headers"]["id"] in wanted:
                tags[message["headers"]["id"]] = tag
            else:
                leg.ack(tag)
    assert set(tags) == wanted, f"never arrived: {sorted(wanted - set(tags))}"
    return tags


def publish(leg: KafkaLeg) -> str:
    task_id = str(uuid.uuid4())
    leg.publish(QUEUE, {"body": "{}", "headers": {"id": task_id}, "properties": {}})
    return task_id


def test_a_consumer_outside_its_group_too_long_is_replaced_and_loses_nothing() -> None:
    """A hung broker ends the consumer's session; past ``rejoin_timeout`` without a member id the
    leg replaces the consumer. The message it held unfinished comes again on the new one."""
    leg = KafkaLeg(require_env("KAFKA_BOOTSTRAP_SERVERS"), rejoin_timeout=3.0)
    try:
        leg.consume([QUEUE])
        held = publish(leg)
        take(leg, {held})  # fetched, not acknowledged: a task still running
        first = leg.consumer
        assert first is not None and first.memberid()

        def replaced() -> bool:
            leg.wait(0.5)
            return leg.consumer is not first

        with kafka_frozen():  # the session times out after 10 s, and the watch counts 3 s more
            wait_for(replaced, 40, 0, what="the consumer replaced")
        later = publish(leg)
        tags = take(leg, {held, later})
        for tag in tags.values():
            leg.ack(tag)
        leg.flush()
    finally:
        leg.close()


def test_a_topic_with_fewer_partitions_than_configured_gets_more_and_never_fewer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers = require_env("KAFKA_BOOTSTRAP_SERVERS")
    admin = AdminClient({"bootstrap.servers": servers})
    topic = f"helixagent.test.partitions.{uuid.uuid4().hex[:8]}"

    def partitions() -> int:
        return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)

    try:
        ensure_topics(servers, 2, [topic])
        assert partitions() == 2
        with caplog.at_level("INFO", logger="helixagent.migration.kafka"):
            ensure_topics(servers, 4, [topic])  # messaging.kafka_partitions raised
        assert partitions() == 4
        assert [r.getMessage() for r in caplog.records] == ["kafka.partitions_added"]
        ensure_topics(servers, 3, [topic])  # lowered: Kafka keeps what the topic has
        assert partitions() == 4
    finally:
        for future in admin.delete_topics([topic], operation_timeout=10).values():
            future.result(15)
