"""Confirmed publishing to RabbitMQ, and migrate-pending, beside vanilla Celery in the same run.

* confirmed publish: N task messages published with publisher confirms. HelixAgent publishes as its
  outbox publisher does (batches of ``--batch`` with pipelined confirms, ``migration.legs.rabbitmq``);
  vanilla Celery calls ``apply_async`` with ``confirm_publish`` (one confirm round trip each).
* migrate-pending: N tasks waiting in the PostgreSQL queue moved to RabbitMQ with confirms
  (``migration.migrate_pending``), tasks per second; ``--repeat K`` runs K rounds and reports
  their median (the shared machines this runs on vary by a third from one round to the next).

Usage: ``python -m bench.publish`` with the variables of ``scripts/services.sh env`` set.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import RESULTS, cpu_per_task, cpu_reading, django_on_fresh_database, machine, median, service_urls
from bench.modes import purge_brokers


def vanilla_confirmed(rabbitmq_url: str, count: int) -> float:
    os.environ["BENCH_BROKER_URL"] = rabbitmq_url.replace("amqp://", "pyamqp://", 1)
    from bench.vanilla_app import app, noop

    app.conf.broker_url = os.environ["BENCH_BROKER_URL"]
    app.conf.broker_transport_options = {"confirm_publish": True}
    with app.connection_for_write() as conn:
        conn.default_channel.queue_declare("celery", durable=True, auto_delete=False)
        conn.default_channel.queue_purge("celery")
    noop.apply_async()
    started = time.perf_counter()
    for _ in range(count):
        noop.apply_async()
    elapsed = time.perf_counter() - started
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("celery")
    return count / elapsed


def sample_message() -> dict[str, Any]:
    """One real task message as the router builds it (captured, not published)."""
    from migration.legs.rabbitmq import RabbitMQLeg
    from tasks import service
    from tasks.models import Task

    captured: list[dict[str, Any]] = []
    original = RabbitMQLeg.publish_batch
    RabbitMQLeg.publish_batch = lambda self, items: captured.extend(m for _q, m in items)  # type: ignore[method-assign]
    try:
        task = Task(task_type="noop", queue="helixagent.tasks.background", published_to="rabbitmq")
        task.save()
        service._send(task)
    finally:
        RabbitMQLeg.publish_batch = original  # type: ignore[method-assign]
    return captured[0]


def ours_confirmed(count: int, batch: int) -> float:
    from helixagent.config import get_config
    from migration.legs.rabbitmq import RabbitMQLeg

    template = sample_message()
    messages = []
    for _ in range(count):
        message = copy.deepcopy(template)
        message["headers"]["id"] = str(uuid.uuid4())
        messages.append(("helixagent.tasks.background", message))
    leg = RabbitMQLeg(get_config().messaging.rabbitmq_url)
    started = time.perf_counter()
    for start in range(0, count, batch):
        leg.publish_batch(messages[start : start + batch])
    elapsed = time.perf_counter() - started
    leg.channel.queue_purge("helixagent.tasks.background")
    leg.close()
    return count / elapsed


def migrate_rate(count: int) -> tuple[float, str]:
    """Tasks per second that migrate-pending moves, and the CPU per task of each process group
    meanwhile (``producer`` is this process, which runs migrate-pending)."""
    from django.db import connections

    from migration import migrate_pending, state
    from tasks import service
    from tasks.models import Task

    state.set_mode("legacy", by="bench", source="cli")

    def chunk(size: int) -> None:
        for _ in range(size):
            service.submit({"task_type": "noop"})
        connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(chunk, [count // 4] * 4))
    state.set_mode("messaging", by="bench", source="cli", force=True)
    cpu_before = cpu_reading()
    started = time.perf_counter()
    progress = migrate_pending.migrate_pending(batch_size=2000)
    elapsed = time.perf_counter() - started
    assert progress.remaining == 0 and progress.failed == 0, progress
    assert progress.migrated == count, progress
    cpu = cpu_per_task(cpu_before, cpu_reading(), progress.migrated)
    # The next round starts from nothing: without its tasks, which switching back to legacy
    # would otherwise re-enqueue into PostgreSQL and move again, and with empty queues.
    Task.objects.all().delete()
    purge_brokers()
    return progress.migrated / elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--migrate", type=int, default=10_000, help="tasks moved by migrate-pending")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of migrate-pending (the median is reported)")
    args = parser.parse_args()
    base, rabbitmq_url = service_urls()
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"# machine: {machine()}")
    os.environ["MESSAGING_BROKER"] = "rabbitmq"
    django_on_fresh_database(base, "helixagent_bench_publish")
    vanilla = vanilla_confirmed(rabbitmq_url, args.messages)
    ours = ours_confirmed(args.messages, args.batch)
    print(f"\n| confirmed publish, {args.messages} messages to RabbitMQ | messages/s |")
    print("|---|---|")
    print(f"| vanilla Celery, confirm_publish (one confirm each) | {vanilla:.0f} |")
    print(f"| HelixAgent outbox publisher (batches of {args.batch}, pipelined confirms) | {ours:.0f} |")
    print(f"confirmed publish: {ours / vanilla:.1f}x vanilla Celery's confirm_publish (goal ≥ 3x)")
    rates = []
    for _ in range(args.repeat if args.migrate else 0):
        rate, cpu = migrate_rate(args.migrate)
        rates.append(rate)
        print(f"migrate-pending: {args.migrate} tasks moved at {rate:.0f} tasks/s; {cpu}")
    if rates:
        print(f"migrate-pending: median {median(rates):.0f} tasks/s over {len(rates)} rounds (goal ≥ 10000 tasks/s)")


if __name__ == "__main__":
    main()
