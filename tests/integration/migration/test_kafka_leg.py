"""The Kafka leg against the real broker."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from migration.legs.base import Empty, LegUnavailable
from migration.legs.kafka import COMMIT_INTERVAL, GROUP, WORK_TOPIC, KafkaLeg, ensure_topics
from tests.conftest import delete_kafka_work_topic, kafka_frozen, require_env, wait_for

QUEUE = "helixagent.tasks.background"
OTHER_QUEUE = "helixagent.tasks.llm"
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


def message(task_id: str) -> dict[str, Any]:
    return {"body": "{}", "headers": {"id": task_id}, "properties": {}}


def publish(leg: KafkaLeg) -> str:
    task_id = str(uuid.uuid4())
    leg.publish(QUEUE, message(task_id))
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


def test_records_it_cannot_read_are_passed_over_and_a_record_of_another_queue_runs_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage on the work topic is logged and committed past; a record for a queue this worker
    does not consume comes under one it does (no other worker reads this partition)."""
    servers = require_env("KAFKA_BOOTSTRAP_SERVERS")
    task_id = str(uuid.uuid4())
    written: list[tuple[int, int]] = []
    producer = Producer({"bootstrap.servers": servers})
    records = [(b"not json", {}), (b"123", {}), (json.dumps(message(task_id)).encode(), {"queue": OTHER_QUEUE})]
    for value, headers in records:  # one key, so one partition, in this order
        producer.produce(
            WORK_TOPIC,
            key=task_id.encode(),
            value=value,
            headers=headers,
            on_delivery=lambda _error, record: written.append((record.partition(), record.offset())),
        )
    assert producer.flush(10) == 0
    leg = KafkaLeg(servers)
    try:
        leg.consume([QUEUE])
        with caplog.at_level("INFO", logger="helixagent.migration.kafka"):
            tags = take(leg, {task_id})
        leg.ack(tags[task_id])
    finally:
        leg.close()
    passed_over = {(r.partition, r.offset) for r in caplog.records if r.getMessage() == "kafka.unreadable_message"}
    assert set(written[:2]) <= passed_over
    assert OTHER_QUEUE in {r.queue for r in caplog.records if r.getMessage() == "kafka.queue_not_consumed"}
    partition, last = written[-1]
    group = Consumer({"bootstrap.servers": servers, "group.id": GROUP})
    try:
        [committed] = group.committed([TopicPartition(WORK_TOPIC, partition)], timeout=10)
    finally:
        group.close()
    assert committed.offset > last, "the commit stopped at a record it could not read"


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


def test_a_work_topic_deleted_and_made_again_is_read_from_its_start(caplog: pytest.LogCaptureFixture) -> None:
    """The recreated topic's offsets start at 0 while librdkafka fetches each partition from its
    old position: every message below it would be skipped for good."""
    servers = require_env("KAFKA_BOOTSTRAP_SERVERS")
    admin = AdminClient({"bootstrap.servers": servers})
    delete_kafka_work_topic()  # positions low enough for the new topic's offsets to pass them
    leg = KafkaLeg(servers)
    try:
        leg.consume([QUEUE])
        for tag in take(leg, {publish(leg) for _ in range(8)}).values():  # a position on most partitions
            leg.ack(tag)
        time.sleep(COMMIT_INTERVAL)
        leg.flush()
        delete_kafka_work_topic()
        # The leg's producer makes the topic again (auto-creation, as any producer's would).
        # Enough messages to reach past the old positions, which then seem valid to librdkafka.
        after = {wait_for(lambda: publish_or_none(leg), 30, what="a publish to the new topic") for _ in range(40)}
        with caplog.at_level("WARNING", logger="helixagent.migration.kafka"):
            for tag in take(leg, after).values():
                leg.ack(tag)

            # A partition whose old position lay past the new end was reset by librdkafka itself,
            # maybe before the leg's watch (every 10 s) had looked: the watch notices all the same.
            def noticed() -> bool:
                leg.wait(1.0)  # consuming on, as a worker does
                return "kafka.topic_recreated" in [r.getMessage() for r in caplog.records]

            wait_for(noticed, 30, what="the new topic noticed")
        # ... and with the partitions the leg gives it, not the broker's default
        assert len(admin.list_topics(WORK_TOPIC, timeout=10).topics[WORK_TOPIC].partitions) >= leg.partitions
    finally:
        leg.close()


def publish_or_none(leg: KafkaLeg) -> str | None:
    try:
        return publish(leg)
    except LegUnavailable:
        return None


def test_offsets_committed_on_an_earlier_topic_of_the_same_name_are_not_taken_for_positions() -> None:
    """Another worker may commit its old positions after the topic was made again; a partition
    assigned with such an offset is read from its start."""
    servers = require_env("KAFKA_BOOTSTRAP_SERVERS")
    ensure_topics(servers, 8)
    producer = Producer({"bootstrap.servers": servers})
    waiting = {str(uuid.uuid4()) for _ in range(10)}
    for task_id in waiting:
        producer.produce(WORK_TOPIC, key=task_id.encode(), value=json.dumps(message(task_id)).encode())
    assert producer.flush(10) == 0
    group = Consumer({"bootstrap.servers": servers, "group.id": GROUP})
    try:
        ends = []
        for p in group.list_topics(WORK_TOPIC, timeout=10).topics[WORK_TOPIC].partitions:
            _low, high = group.get_watermark_offsets(TopicPartition(WORK_TOPIC, p), timeout=10)
            ends.append(TopicPartition(WORK_TOPIC, p, high, metadata="id-of-a-deleted-topic"))
        group.commit(offsets=ends, asynchronous=False)
    finally:
        group.close()
    leg = KafkaLeg(servers)
    try:
        leg.consume([QUEUE])
        for tag in take(leg, waiting).values():
            leg.ack(tag)
    finally:
        leg.close()
