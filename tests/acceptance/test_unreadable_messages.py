"""Messages a worker cannot read, on the queue it consumes (another producer, a record cut
short): the worker logs each one, passes over it for good (on RabbitMQ: to the dead-letter
queue) and goes on with its tasks."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from kombu import Connection

from migration.legs.kafka import WORK_TOPIC
from migration.pgqueue.store import PostgresStore
from tests.conftest import ModeSetting, purge_rabbitmq, require_env, wait_for
from tests.helpers import completed_once, submit, wait_completed

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "helixagent.tasks.background"


def write_unreadable(setting: ModeSetting, db_url: str) -> list[str]:
    """Put three unreadable messages on the queue the worker consumes; return them (each names
    this test run, so what other runs left on the topic is told apart)."""
    run = uuid.uuid4().hex
    values = [f"not json {run}", f'["{run}"]', f'{{"body": "{run}"}}']
    if setting.broker == "kafka":
        producer = Producer({"bootstrap.servers": require_env("KAFKA_BOOTSTRAP_SERVERS")})
        for value in values:
            producer.produce(WORK_TOPIC, value=value.encode(), key=run.encode(), headers={"queue": QUEUE})
        assert producer.flush(10) == 0
    else:
        store = PostgresStore(db_url)
        try:
            for value in values:
                store.put(QUEUE, 0, value, None)
        finally:
            store.close()
    return [json.dumps(value)[1:-1] for value in values]  # as the JSON log line writes them


@pytest.mark.parametrize(
    "setting", [ModeSetting("legacy"), ModeSetting("messaging", broker="kafka")], ids=lambda s: s.id
)
def test_a_worker_passes_over_messages_it_cannot_read_once_and_for_good(
    api: Any, start_worker: Any, switch_mode: Any, live_db_url: str, setting: ModeSetting
) -> None:
    switch_mode(setting)
    first = start_worker("w1", **setting.env)
    unreadable = write_unreadable(setting, live_db_url)
    before = [submit(api, "noop") for _ in range(10)]
    wait_completed(before, timeout=60)
    lines = [line for line in first.log_path.read_text().splitlines() if "unreadable_message" in line]
    assert [sum(sample in line for line in lines) for sample in unreadable] == [1, 1, 1], lines
    first.stop()
    second = start_worker("w2", **setting.env)  # a restart does not meet them again
    after = [submit(api, "noop") for _ in range(10)]
    wait_completed(after, timeout=60)
    completed_once(before + after)
    log = second.log_path.read_text()
    assert not [sample for sample in unreadable if sample in log]


def dead_lettered() -> list[bytes]:
    """Take every message out of ``helixagent.dlq``; return their bodies."""
    bodies = []
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        channel = conn.channel()
        while (message := channel.basic_get("helixagent.dlq", no_ack=True)) is not None:
            bodies.append(message.body.encode() if isinstance(message.body, str) else message.body)
    return bodies


def test_on_rabbitmq_an_undecodable_body_an_unknown_task_and_a_task_without_one_task_id_are_dead_lettered(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()  # the dead-letter queue too
    switch_mode(setting)
    run = uuid.uuid4().hex
    undecodable, unknown = f"not json {run}".encode(), json.dumps([[run], {}, {}]).encode()
    no_task_id = json.dumps([[f"job-{run}"], {}, {}]).encode()
    two_arguments = json.dumps([[str(uuid.uuid4()), run], {}, {}]).encode()
    messages = [
        (undecodable, {}),
        (unknown, {"id": run, "task": "another.app.job"}),
        (no_task_id, {"id": run, "task": "helixagent.run_task"}),
        (two_arguments, {"id": run, "task": "helixagent.run_task"}),
    ]
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        producer = conn.Producer()
        for body, headers in messages:
            producer.publish(
                body,
                exchange="helixagent.tasks",
                routing_key=QUEUE,
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
            )
    worker = start_worker("w1", **setting.env)
    tasks = [submit(api, "noop") for _ in range(5)]
    wait_completed(tasks, timeout=60)
    found: list[bytes] = []
    wait_for(lambda: found.extend(dead_lettered()) or {body for body, _ in messages} <= set(found), 30, what="DLQ")
    log = worker.log_path.read_text()
    assert "Can't decode message body" in log and "another.app.job" in log and "task.invalid_message" in log
