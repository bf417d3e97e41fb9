"""The Kafka mirror of lifecycle events (SPEC §5), on real PostgreSQL, RabbitMQ and Kafka: in
dual_write and messaging every event of the task-event table reaches ``helixagent.events.tasks``
under its task's id, from the submitting process and the worker alike; legacy mirrors nothing;
and a hung Kafka delays no task."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from helixagent.config import get_config
from migration import events, preflight
from migration.legs.kafka import EVENTS_TOPIC, ensure_topics
from tasks.models import TaskEvent
from tests.conftest import ModeSetting, kafka_frozen, require_env
from tests.helpers import completed_once, submit, wait_completed

pytestmark = pytest.mark.django_db(transaction=True)
Event = tuple[str, str, str]  # kind, from status, to status


def consumer() -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": require_env("KAFKA_BOOTSTRAP_SERVERS"),
            "group.id": f"helixagent-tests-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )


def topic_ends() -> list[TopicPartition]:
    """Where each partition of the events topic ends now: what follows was produced after."""
    ensure_topics(require_env("KAFKA_BOOTSTRAP_SERVERS"), 8)
    reader = consumer()
    try:
        partitions = reader.list_topics(EVENTS_TOPIC, timeout=10).topics[EVENTS_TOPIC].partitions
        return [
            TopicPartition(
                EVENTS_TOPIC, p, reader.get_watermark_offsets(TopicPartition(EVENTS_TOPIC, p), timeout=10)[1]
            )
            for p in partitions
        ]
    finally:
        reader.close()


def mirrored(since: list[TopicPartition], task_ids: list[str], expected: int, timeout: float) -> dict[str, list[Event]]:
    """The events produced after ``since`` for ``task_ids``, once ``expected`` have come (or at the timeout)."""
    found: dict[str, list[Event]] = defaultdict(list)
    wanted = set(task_ids)
    reader = consumer()
    reader.assign(since)
    deadline = time.monotonic() + timeout
    try:
        while sum(map(len, found.values())) < expected and time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None or message.error() is not None:
                continue
            key = (message.key() or b"").decode()
            if key in wanted:
                event: dict[str, Any] = json.loads(message.value())
                assert event["task_id"] == key
                found[key].append((event["kind"], event.get("from_status", ""), event.get("to_status", "")))
    finally:
        reader.close()
    return found


def recorded(task_ids: list[str]) -> dict[str, list[Event]]:
    rows: dict[str, list[Event]] = defaultdict(list)
    for task_id, kind, from_status, to_status in TaskEvent.objects.filter(task_id__in=task_ids).values_list(
        "task_id", "kind", "from_status", "to_status"
    ):
        rows[str(task_id)].append((kind, from_status or "", to_status or ""))
    return rows


@pytest.mark.parametrize(
    "setting",
    [
        ModeSetting("dual_write", 50),
        ModeSetting("messaging", broker="rabbitmq"),
        ModeSetting("messaging", broker="kafka"),
    ],
    ids=lambda setting: setting.id,
)
def test_every_event_of_every_task_is_mirrored_to_kafka(
    api: Any, start_worker: Any, switch_mode: Any, setting: ModeSetting
) -> None:
    switch_mode(setting)
    since = topic_ends()
    start_worker("w1", **setting.env)
    ids = [submit(api, "noop") for _ in range(10)]
    wait_completed(ids, timeout=60)
    expected = recorded(ids)
    total = sum(map(len, expected.values()))
    assert total >= len(ids) * 3  # at least queued, running and completed for each
    got = mirrored(since, ids, total, timeout=30)
    # Each process produces its own events (submit: the API; claim and outcome: the worker), so
    # their order in the topic is not the table's; the set of events must be the same.
    assert {task_id: sorted(evs) for task_id, evs in got.items()} == {
        task_id: sorted(evs) for task_id, evs in expected.items()
    }


def test_legacy_mirrors_nothing(api: Any, switch_mode: Any) -> None:
    switch_mode(ModeSetting("legacy"))
    since = topic_ends()
    task_id = submit(api, "noop")
    assert events.flush(10) == 0
    assert recorded([task_id])  # the table has the events; Kafka must not
    assert mirrored(since, [task_id], 1, timeout=3) == {}


def test_a_hung_kafka_costs_mirrored_events_never_a_task(api: Any, start_worker: Any, switch_mode: Any) -> None:
    setting = ModeSetting("dual_write", 50)
    switch_mode(setting)
    start_worker("w1", **setting.env)
    wait_completed([submit(api, "noop")], timeout=30)  # both processes have produced to Kafka before it hangs
    with kafka_frozen():
        assert preflight.reach("kafka", get_config()) is not None, "Kafka still answers"
        ids = [submit(api, "noop") for _ in range(50)]
        wait_completed(ids, timeout=30)
    completed_once(ids)
