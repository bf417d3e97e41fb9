"""Legacy mode (PostgreSQL queue) beside vanilla Celery on kombu's SQLAlchemy transport.

Both run on the same PostgreSQL, with the same worker pool (``--pool``, ``--concurrency``), in one run:

* end-to-end throughput: N no-op tasks submitted as fast as one producer can while one worker
  executes them; time from the first submit to the last completion (bounded by the producer);
* drain throughput: N no-op tasks already queued, one worker started; time from its first to
  its last execution (the queue and the worker alone);
* enqueue→start latency at a steady rate: p50 / p99 of (execution start - submit time).

HelixAgent's submit writes the task row and its events and publishes; vanilla Celery only
publishes. Usage: ``make bench`` or ``python -m bench.legacy --tasks 10000`` with
``DATABASE_URL`` pointing at PostgreSQL (``scripts/services.sh env`` prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    cpu_per_task,
    cpu_reading,
    fresh_database,
    machine,
    median,
    percentile,
    service_urls,
    start_worker,
    stop,
    summary_ms,
    wait_until,
)

QUEUES = "helixagent.tasks.background"


def paced(count: int, rate: float, submit: Callable[[], object]) -> None:
    """Call ``submit`` ``count`` times at ``rate`` per second."""
    started = time.monotonic()
    for n in range(count):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        submit()


def helixagent_round(tasks: int, latency_tasks: int, rate: float) -> dict[str, Any]:
    """With a HelixAgent worker running: warm up, then time ``tasks`` no-op submits and their
    completion, then ``latency_tasks`` submits at ``rate`` per second (enqueue→start latencies)."""
    from tasks import service
    from tasks.models import Task

    warm, _ = service.submit({"task_type": "noop"})
    wait_until(lambda: Task.objects.filter(pk=warm.pk, status="completed").exists(), 120)
    Task.objects.all().delete()
    cpu_before = cpu_reading()
    started = time.monotonic()
    for _ in range(tasks):
        service.submit({"task_type": "noop"})
    enqueued = time.monotonic()
    finished = wait_until(lambda: Task.objects.filter(status="completed").count() >= tasks, 1800, 0.2)
    cpu = cpu_per_task(cpu_before, cpu_reading(), tasks)
    Task.objects.all().delete()
    paced(latency_tasks, rate, lambda: service.submit({"task_type": "noop"}))
    wait_until(lambda: Task.objects.filter(status="completed").count() >= latency_tasks, 300)
    latencies = [
        (task.started_at - task.created_at).total_seconds()
        for task in Task.objects.only("created_at", "started_at")
        if task.started_at
    ]
    return {"submit_s": enqueued - started, "e2e_per_s": tasks / (finished - started), "latency": latencies, "cpu": cpu}


def vanilla_round(noop: Any, marks: Path, tasks: int, latency_tasks: int, rate: float) -> dict[str, Any]:
    """The same round for vanilla Celery, whose task appends ``<latency> <start>`` lines to ``marks``."""

    def executed() -> int:
        return len(marks.read_text().splitlines()) if marks.exists() else 0

    noop.apply_async(args=[time.time()])
    wait_until(lambda: executed() >= 1, 120)
    marks.unlink()
    cpu_before = cpu_reading()
    started = time.monotonic()
    for _ in range(tasks):
        noop.apply_async(args=[time.time()])
    enqueued = time.monotonic()
    finished = wait_until(lambda: executed() >= tasks, 1800, 0.2)
    cpu = cpu_per_task(cpu_before, cpu_reading(), tasks)
    marks.unlink()
    paced(latency_tasks, rate, lambda: noop.apply_async(args=[time.time()]))
    wait_until(lambda: executed() >= latency_tasks, 300)
    latencies = [float(line.split()[0]) for line in marks.read_text().splitlines()]
    return {"submit_s": enqueued - started, "e2e_per_s": tasks / (finished - started), "latency": latencies, "cpu": cpu}


def run_helixagent(url: str, tasks: int, latency_tasks: int, rate: float, pool: dict[str, Any]) -> dict[str, Any]:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helixagent.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Max, Min

    from tasks import service
    from tasks.models import Task

    call_command("migrate", verbosity=0)
    env = {**os.environ, "HELIX_LOG_DIR": str(RESULTS / "logs")}
    worker = start_worker("helixagent", env, RESULTS / "logs" / "helixagent-worker.log", queues=QUEUES, **pool)
    try:
        run = helixagent_round(tasks, latency_tasks, rate)
    finally:
        stop(worker)
    Task.objects.all().delete()
    for _ in range(tasks):
        service.submit({"task_type": "noop"})
    worker = start_worker("helixagent", env, RESULTS / "logs" / "helixagent-worker.log", queues=QUEUES, **pool)
    try:
        wait_until(lambda: Task.objects.filter(status="completed").count() >= tasks, 900, 0.2)
        span = Task.objects.aggregate(first=Min("started_at"), last=Max("started_at"))
    finally:
        stop(worker)
    return {
        "enqueue_per_s": tasks / run["submit_s"],
        "e2e_per_s": run["e2e_per_s"],
        "cpu": run["cpu"],
        "drain_per_s": (tasks - 1) / (span["last"] - span["first"]).total_seconds(),
        "latency": run["latency"],
    }


def run_vanilla(url: str, tasks: int, latency_tasks: int, rate: float, pool: dict[str, Any]) -> dict[str, Any]:
    broker = url.replace("postgresql://", "sqla+postgresql+psycopg://", 1)
    os.environ["BENCH_BROKER_URL"] = broker
    from bench.vanilla_app import app, noop

    app.conf.broker_url = broker
    marks = RESULTS / "vanilla-latency.txt"

    def executed() -> int:
        return len(marks.read_text().splitlines()) if marks.exists() else 0

    env = {**os.environ, "BENCH_LATENCY_FILE": str(marks)}
    marks.unlink(missing_ok=True)
    worker = start_worker("bench.vanilla_app", env, RESULTS / "logs" / "vanilla-worker.log", **pool)
    try:
        run = vanilla_round(noop, marks, tasks, latency_tasks, rate)
    finally:
        stop(worker)
    marks.unlink()
    for _ in range(tasks):
        noop.apply_async(args=[time.time()])
    worker = start_worker("bench.vanilla_app", env, RESULTS / "logs" / "vanilla-worker.log", **pool)
    try:
        wait_until(lambda: executed() >= tasks, 1800, 0.2)
        starts = [float(line.split()[1]) for line in marks.read_text().splitlines()]
    finally:
        stop(worker)
    return {
        "enqueue_per_s": tasks / run["submit_s"],
        "e2e_per_s": run["e2e_per_s"],
        "cpu": run["cpu"],
        "drain_per_s": (tasks - 1) / (max(starts) - min(starts)),
        "latency": run["latency"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in the throughput run")
    parser.add_argument("--latency-tasks", type=int, default=500, help="tasks in the latency run")
    parser.add_argument("--rate", type=float, default=100.0, help="submissions per second in the latency run")
    parser.add_argument("--pool", default="prefork", choices=["threads", "prefork"], help="worker pool, both sides")
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency, both sides")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, each in a fresh process; prints medians")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # where a single round writes its summary
    args = parser.parse_args()
    base, _ = service_urls(rabbitmq=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.repeat > 1:
        repeat(args)
        return
    print(f"# machine: {machine()}")
    print(f"# worker pool: {args.pool}, concurrency {args.concurrency}")
    pool = {"pool": args.pool, "concurrency": args.concurrency}
    vanilla_url = fresh_database(base, "helixagent_bench_vanilla")
    ours_url = fresh_database(base, "helixagent_bench")
    print(f"# vanilla Celery, kombu SQLAlchemy transport: {args.tasks} tasks …", flush=True)
    vanilla = run_vanilla(vanilla_url, args.tasks, args.latency_tasks, args.rate, pool)
    print(f"# HelixAgent legacy (PostgreSQL queue): {args.tasks} tasks …", flush=True)
    ours = run_helixagent(ours_url, args.tasks, args.latency_tasks, args.rate, pool)
    report(args, ours, vanilla)
    if args.json:
        summary = {key: [ours[key], vanilla[key]] for key in ("e2e_per_s", "drain_per_s")}
        summary["p50_ms"] = [percentile(ours["latency"], 50) * 1000, percentile(vanilla["latency"], 50) * 1000]
        Path(args.json).write_text(json.dumps(summary))


def repeat(args: argparse.Namespace) -> None:
    """Run ``--repeat`` rounds, each in a fresh process on fresh databases; print the medians."""
    rounds = []
    for number in range(1, args.repeat + 1):
        print(f"\n# round {number} of {args.repeat}", flush=True)
        out = RESULTS / f"round-{number}.json"
        command = [
            sys.executable,
            "-m",
            "bench.legacy",
            "--tasks",
            str(args.tasks),
            "--latency-tasks",
            str(args.latency_tasks),
            "--rate",
            str(args.rate),
            "--pool",
            args.pool,
            "--concurrency",
            str(args.concurrency),
            "--json",
            str(out),
        ]
        subprocess.run(command, check=True)
        rounds.append(json.loads(out.read_text()))
    print(f"\nover {len(rounds)} rounds (median, min-max of the per-round values):")
    for key, name in (("e2e_per_s", "end-to-end throughput"), ("drain_per_s", "drain throughput")):
        ratios = sorted(r[key][0] / r[key][1] for r in rounds)
        print(f"  {name}: {median(ratios):.1f}x vanilla ({ratios[0]:.1f}-{ratios[-1]:.1f}x)")
    p50s = sorted(r["p50_ms"][0] for r in rounds)
    print(f"  HelixAgent enqueue→start p50: {median(p50s):.1f} ms ({p50s[0]:.1f}-{p50s[-1]:.1f} ms)")


def report(args: argparse.Namespace, ours: dict[str, Any], vanilla: dict[str, Any]) -> None:
    rows = [
        ("submit rate (tasks/s)", f"{ours['enqueue_per_s']:.0f}", f"{vanilla['enqueue_per_s']:.0f}"),
        ("end-to-end throughput (tasks/s)", f"{ours['e2e_per_s']:.0f}", f"{vanilla['e2e_per_s']:.0f}"),
        ("drain throughput (tasks/s)", f"{ours['drain_per_s']:.0f}", f"{vanilla['drain_per_s']:.0f}"),
        (f"enqueue→start at {args.rate:.0f}/s", summary_ms(ours["latency"]), summary_ms(vanilla["latency"])),
    ]
    width = max(len(r[0]) for r in rows)
    title = f"legacy, {args.tasks} no-op tasks"
    print(f"\n| {title:<{width}} | HelixAgent legacy | vanilla Celery (kombu SQLAlchemy) |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for name, a, b in rows:
        print(f"| {name:<{width}} | {a} | {b} |")
    for key, name in (("e2e_per_s", "end-to-end"), ("drain_per_s", "drain")):
        print(f"{name} throughput: {ours[key] / vanilla[key]:.1f}x vanilla (goal ≥ 5x)")
    print(f"end-to-end, HelixAgent legacy: {ours['cpu']}")
    print(f"end-to-end, vanilla Celery: {vanilla['cpu']}")


if __name__ == "__main__":
    main()
