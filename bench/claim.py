"""What a claim and its outcome cost when the claim's commit does not wait for the WAL flush,
beside the same claim committed durably, in alternating rounds of one run.

No worker runs: this process submits ``--tasks`` tasks, then claims and completes each in turn
(``tasks.transitions``, as a worker's pool process does), timing the claims and outcomes only.
The baseline round sets :data:`helixagent.prepared.ASYNC_COMMIT` to a condition that changes
nothing, so its claims commit durably. Printed: medians of ms per task (wall), CPU ms per task
of PostgreSQL, of this process and of everything else (the kernel's share of a flush lands
there), and WAL flushes per task (``pg_stat_wal.wal_sync``, the database's own count).

Usage: ``python -m bench.claim`` with the variables of ``scripts/services.sh env`` set.
"""

from __future__ import annotations

import argparse
import time

from bench.common import cpu_reading, cpu_used, django_on_fresh_database, machine, median, service_urls, wal_flushes

#: name: the claim's condition (``ASYNC_COMMIT``) in that variant; None keeps the shipped one.
VARIANTS: dict[str, str | None] = {"claim not waiting for the flush": None, "durable claim (baseline)": "true"}
COLUMNS = ("ms per task", "CPU ms, PostgreSQL", "CPU ms, this process", "CPU ms, other", "WAL flushes per task")


def claim_round(count: int, condition: str | None) -> tuple[float, ...]:
    """One round: ``count`` claims and outcomes with the claim's ``ASYNC_COMMIT`` replaced by
    ``condition`` (unless None); returns the values of :data:`COLUMNS`."""
    from helixagent import prepared
    from tasks import service, transitions
    from tasks.models import Task

    ids = [service.submit({"task_type": "noop"})[0].pk for _ in range(count)]
    shipped = prepared.ASYNC_COMMIT
    if condition is not None:
        prepared.ASYNC_COMMIT = condition
    transitions._statement.cache_clear()  # statement texts are built once per shape
    try:
        flushes, cpu_before, started = wal_flushes(), cpu_reading(), time.perf_counter()
        for task_id in ids:
            task = transitions.claim(task_id, "bench:1", "postgresql")
            assert task is not None, task_id
            transitions.complete(task, None)
        elapsed, cpu_after, flushed = time.perf_counter() - started, cpu_reading(), wal_flushes() - flushes
    finally:
        prepared.ASYNC_COMMIT = shipped
        transitions._statement.cache_clear()
    Task.objects.all().delete()
    cpu = {name: seconds / count * 1000 for name, seconds in cpu_used(cpu_before, cpu_after).items()}
    other = sum(cpu.values()) - cpu["PostgreSQL"] - cpu["producer"]
    return elapsed / count * 1000, cpu["PostgreSQL"], cpu["producer"], other, flushed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="claims and outcomes per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base, _ = service_urls(rabbitmq=False)
    print(f"# machine: {machine()}")
    django_on_fresh_database(base, "helixagent_bench_claim")
    samples: dict[str, list[tuple[float, ...]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, condition in VARIANTS.items():
            samples[name].append(claim_round(args.tasks, condition))
    print(f"\n| {args.tasks} claims and outcomes, medians of {args.rounds} rounds | " + " | ".join(COLUMNS) + " |")
    print("|---" * (1 + len(COLUMNS)) + "|")
    for name, rounds in samples.items():
        cells = " | ".join(f"{median([values[i] for values in rounds]):.3f}" for i in range(len(COLUMNS)))
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
