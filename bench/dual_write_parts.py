"""Where a dual_write submit spends its time beyond legacy's: each part switched off in turn.

No worker runs. Each round times ``--tasks`` submits (until every broker copy is confirmed and
every mirrored event acknowledged) in legacy, in dual_write 50 %, and in dual_write 50 % with
the Kafka mirror of task events off, with the outbox publisher thread off (its records stay
in the outbox, as if the publisher had died), with both off, and with the publisher sending
each batch as soon as the last is confirmed (``migration.outbox.BATCH_INTERVAL`` 0); the rounds
alternate and the medians are printed, with the CPU each process group spent per submit (this
process, which runs the publisher thread and the mirror, under ``producer``). What is left
with both off is the outbox record written in the submit.

Usage: ``python -m bench.dual_write_parts`` with the variables of ``scripts/services.sh env`` set.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from bench.common import cpu_reading, cpu_used, django_on_fresh_database, machine, median, service_urls
from bench.modes import purge_brokers, set_mode

#: name: (mode, Kafka mirror on, outbox publisher on, its batches spaced by ``BATCH_INTERVAL``)
VARIANTS = {
    "legacy": ("legacy", True, True, True),
    "dual_write": ("dual_write", True, True, True),
    "dual_write, no mirror": ("dual_write", False, True, True),
    "dual_write, no publisher": ("dual_write", True, False, True),
    "dual_write, neither": ("dual_write", False, False, True),
    "dual_write, batches not spaced": ("dual_write", True, True, False),
}


#: process groups whose CPU per submit is reported
CPU_COLUMNS = ("producer", "PostgreSQL", "RabbitMQ", "Kafka")


def timed_submits(mode: str, count: int, mirror: bool, publisher: bool, spaced: bool) -> tuple[float, dict[str, float]]:
    """ms per submit, and CPU ms per submit by process group, with the mirror and the publisher
    thread on or off, and the publisher's batches spaced or not."""
    from migration import events, outbox
    from migration.models import OutboxMessage
    from tasks import service
    from tasks.models import Task

    set_mode(mode, 50, "rabbitmq")
    saved: tuple[Callable[..., Any], Callable[..., Any]] = (events.mirror, outbox.publisher.send)
    interval = outbox.BATCH_INTERVAL
    if not spaced:
        outbox.BATCH_INTERVAL = 0.0
    if not mirror:
        events.mirror = lambda *args, **kwargs: None
    if not publisher:
        outbox.publisher.send = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        cpu_before = cpu_reading()
        started = time.perf_counter()
        for _ in range(count):
            service.submit({"task_type": "noop"})
        outbox.publisher.flush(30)
        events.flush(30)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_reading()
    finally:
        events.mirror, outbox.publisher.send = saved  # type: ignore[method-assign]
        outbox.BATCH_INTERVAL = interval
    Task.objects.all().delete()
    OutboxMessage.objects.all().delete()
    purge_brokers()
    used = cpu_used(cpu_before, cpu_after)
    return elapsed / count * 1000, {name: used[name] / count * 1000 for name in CPU_COLUMNS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500, help="submits per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base, _ = service_urls()
    print(f"# machine: {machine()}")
    os.environ["AUTO_ROLLBACK"] = "false"
    django_on_fresh_database(base, "helixagent_bench_parts")
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, dict[str, list[float]]] = {name: {group: [] for group in CPU_COLUMNS} for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (mode, mirror, publisher, spaced) in VARIANTS.items():
            elapsed, used = timed_submits(mode, args.tasks, mirror, publisher, spaced)
            samples[name].append(elapsed)
            for group, value in used.items():
                cpu[name][group].append(value)
    legacy = median(samples["legacy"])
    groups = " | ".join(f"CPU ms, {group}" for group in CPU_COLUMNS)
    title = f"{args.tasks} submits, no worker, medians of {args.rounds} rounds"
    print(f"\n| {title} | ms per submit | vs legacy | {groups} |")
    print("|---" * (3 + len(CPU_COLUMNS)) + "|")
    for name in VARIANTS:
        value = median(samples[name])
        cells = " | ".join(f"{median(cpu[name][group]):.2f}" for group in CPU_COLUMNS)
        print(f"| {name} | {value:.2f} | {value / legacy:.2f}x | {cells} |")


if __name__ == "__main__":
    main()
