"""`make services` brings up RabbitMQ and Kafka: one message through each with real clients."""

from __future__ import annotations

import subprocess
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kombu import Connection

from migration.legs.rabbitmq import RabbitMQLeg
from tasks.routing import ALL_QUEUES
from tests.conftest import ROOT, require_env


def test_services_script_reports_all_three_services_up() -> None:
    result = subprocess.run(["scripts/services.sh", "status"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("PostgreSQL: up", "RabbitMQ: up", "Kafka: up"):
        assert name in result.stdout


def test_services_up_prints_only_export_lines_on_stdout() -> None:
    """`eval "$(scripts/services.sh up)"` must be safe: chatter goes to stderr."""
    result = subprocess.run(["scripts/services.sh", "up"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("export ") for line in lines), result.stdout


def test_rabbitmq_task_queues_use_classic_queue_storage_version_2() -> None:
    """scripts/services.sh applies its policy to every HelixAgent queue, declared before or after."""
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=10) as conn:
        RabbitMQLeg.declare_topology(conn.default_channel)
    result = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "policy"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    policies = dict(line.split("\t")[:2] for line in result.stdout.splitlines()[1:] if "\t" in line)
    assert all(policies[queue] == "helixagent-queues" for queue in ALL_QUEUES), policies
    definition = subprocess.run(
        ["rabbitmqctl", "-q", "list_policies"], capture_output=True, text=True, timeout=60
    ).stdout
    assert any("helixagent-queues" in line and '"queue-version":2' in line for line in definition.splitlines())


def test_rabbitmq_carries_a_message_through_py_amqp() -> None:
    queue_name = f"helixagent.probe.{uuid.uuid4().hex[:8]}"
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=10) as conn:
        assert conn.transport.driver_type == "amqp"
        queue = conn.SimpleQueue(queue_name, queue_opts={"auto_delete": True})
        queue.put({"probe": queue_name})
        message = queue.get(timeout=10)
        message.ack()
        queue.close()
    assert message.payload == {"probe": queue_name}


def test_kafka_carries_a_message_through_confluent_kafka() -> None:
    servers = require_env("KAFKA_BOOTSTRAP_SERVERS")
    topic = f"helixagent.probe.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": servers, "acks": "all", "enable.idempotence": True})
    producer.produce(topic, key=b"k", value=b"hello kafka")
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": topic, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                assert (message.key(), message.value()) == (b"k", b"hello kafka")
                return
        raise AssertionError("no message consumed from Kafka within 60 s")
    finally:
        consumer.close()
