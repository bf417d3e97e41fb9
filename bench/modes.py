"""Every migration mode beside vanilla Celery on the same RabbitMQ, measured in one run.

For each of legacy, dual_write at 0/50/100 %, messaging on RabbitMQ and messaging on Kafka:

* submit rate: one producer calling ``tasks.service.submit`` (task row, events, the mode's
  publishes with their confirms) while the worker runs;
* end-to-end throughput: N no-op tasks from the first submit to the last completion;
* enqueue→start latency: p50 / p99 of (execution start - submit) at a steady rate into an idle
  worker.

The baseline is vanilla Celery on the same RabbitMQ (py-amqp, default settings, no task rows),
with the same pool and concurrency. The publish cost of dual_write is its submit time per task
divided by legacy's (one write), measured twice: during the end-to-end round (the worker
draining on the same cores), and alone (no worker; legacy and dual_write 50 % in alternating
rounds, each timed until every copy is confirmed by its broker and every mirrored event by
Kafka). Usage: ``python -m bench.modes --tasks 10000`` with the
variables of ``scripts/services.sh env`` set.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.common import (
    RESULTS,
    django_on_fresh_database,
    machine,
    median,
    percentile,
    service_urls,
    start_worker,
    stop,
    summary_ms,
)
from bench.legacy import helixagent_round, vanilla_round

#: (label, mode, rabbitmq_percent, broker)
SETTINGS = [
    ("legacy", "legacy", 0, "rabbitmq"),
    ("dual_write 0%", "dual_write", 0, "rabbitmq"),
    ("dual_write 50%", "dual_write", 50, "rabbitmq"),
    ("dual_write 100%", "dual_write", 100, "rabbitmq"),
    ("messaging rabbitmq", "messaging", 0, "rabbitmq"),
    ("messaging kafka", "messaging", 0, "kafka"),
]


def set_mode(mode: str, percent: int, broker: str) -> None:
    from helixagent.config import get_config
    from migration import state

    os.environ["MESSAGING_BROKER"] = broker
    get_config.cache_clear()
    state.set_split(percent, by="bench", source="cli")
    state.set_mode(mode, by="bench", source="cli", force=True)


def purge_brokers() -> None:
    from kombu import Connection

    from helixagent.config import get_config
    from migration.legs.rabbitmq import RabbitMQLeg
    from tasks.routing import ALL_QUEUES

    with Connection(get_config().messaging.rabbitmq_url) as conn:
        channel = conn.channel()
        RabbitMQLeg.declare_topology(channel)
        for queue in ALL_QUEUES:
            channel.queue_purge(queue)


def run_mode(
    setting: tuple[str, str, int, str], tasks: int, latency_tasks: int, rate: float, pool: dict[str, Any]
) -> dict[str, Any]:
    from migration import state
    from tasks.models import Task

    label, mode, percent, broker = setting
    Task.objects.all().delete()
    purge_brokers()
    set_mode(mode, percent, broker)
    env = {**os.environ, "HELIX_LOG_DIR": str(RESULTS / "logs")}
    log = RESULTS / "logs" / f"modes-{label.replace(' ', '-').replace('%', '')}.log"
    worker = start_worker("helixagent", env, log, **pool)
    try:
        run = helixagent_round(tasks, latency_tasks, rate)
    finally:
        stop(worker)
    after = state.current(max_age=0)
    if (after.mode, after.rabbitmq_percent) != (mode, percent):
        raise SystemExit(f"{label}: the mode changed during the run (now {after.mode}, {after.rabbitmq_percent} %)")
    return {
        "submit_ms": run["submit_s"] / tasks * 1000,
        "e2e_per_s": run["e2e_per_s"],
        "latency": run["latency"],
        "cpu": run["cpu"],
    }


def publish_cost_alone(rounds: int = 3, count: int = 500) -> dict[str, float]:
    """Medians over ``rounds``, no worker running: ms per submit of legacy and of dual_write 50 %,
    and their ratio; each side is timed until its broker copies and mirrored events are confirmed."""
    from migration import events, outbox
    from tasks import service
    from tasks.models import Task

    samples: dict[str, list[float]] = {"legacy": [], "dual_write": [], "ratio": []}
    for _ in range(rounds):
        for mode, percent in (("legacy", 0), ("dual_write", 50)):
            set_mode(mode, percent, "rabbitmq")
            started = time.perf_counter()
            for _ in range(count):
                service.submit({"task_type": "noop"})
            outbox.publisher.flush(30)
            events.flush(30)
            samples[mode].append((time.perf_counter() - started) / count * 1000)
            Task.objects.all().delete()
            purge_brokers()
        samples["ratio"].append(samples["dual_write"][-1] / samples["legacy"][-1])
    return {key: median(values) for key, values in samples.items()}


def run_vanilla(rabbitmq_url: str, tasks: int, latency_tasks: int, rate: float, pool: dict[str, Any]) -> dict[str, Any]:
    broker = rabbitmq_url.replace("amqp://", "pyamqp://", 1)
    os.environ["BENCH_BROKER_URL"] = broker
    from bench.vanilla_app import app, noop

    app.conf.broker_url = broker
    marks = RESULTS / "vanilla-rabbitmq-latency.txt"

    env = {**os.environ, "BENCH_LATENCY_FILE": str(marks)}
    marks.unlink(missing_ok=True)
    with app.connection_for_write() as conn:  # start from an empty queue
        conn.default_channel.queue_declare("celery", durable=True, auto_delete=False)
        conn.default_channel.queue_purge("celery")
    worker = start_worker("bench.vanilla_app", env, RESULTS / "logs" / "vanilla-rabbitmq-worker.log", **pool)
    try:
        run = vanilla_round(noop, marks, tasks, latency_tasks, rate)
    finally:
        stop(worker)
    return {
        "submit_ms": run["submit_s"] / tasks * 1000,
        "e2e_per_s": run["e2e_per_s"],
        "latency": run["latency"],
        "cpu": run["cpu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency-tasks", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--pool", default="prefork", choices=["threads", "prefork"])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--only", help="comma-separated labels of the modes to run (default: all)")
    parser.add_argument(
        "--outbox-interval",
        type=float,
        help="seconds between the outbox publisher's batches in the producer (default: as shipped, 0.005)",
    )
    args = parser.parse_args()
    base, rabbitmq_url = service_urls()
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"# machine: {machine()}")
    print(f"# worker pool: {args.pool}, concurrency {args.concurrency}; {args.tasks} no-op tasks per mode")
    pool = {"pool": args.pool, "concurrency": args.concurrency}
    # A producer that outruns the worker builds a backlog whose queue wait passes the automatic
    # rollback's latency threshold, and a rollback mid-run would measure legacy under another
    # label. The benchmark measures each mode as set, and checks that it stayed set.
    os.environ["AUTO_ROLLBACK"] = "false"
    django_on_fresh_database(base, "helixagent_bench_modes")
    if args.outbox_interval is not None:
        from migration import outbox

        outbox.BATCH_INTERVAL = args.outbox_interval
        print(f"# outbox publisher: batches at least {args.outbox_interval * 1000:g} ms apart")
    wanted = set(args.only.split(",")) if args.only else None
    print("# vanilla Celery on RabbitMQ …", flush=True)
    results = {"vanilla Celery (RabbitMQ)": run_vanilla(rabbitmq_url, args.tasks, args.latency_tasks, args.rate, pool)}
    for setting in SETTINGS:
        if wanted and setting[0] not in wanted:
            continue
        print(f"# HelixAgent {setting[0]} …", flush=True)
        results[setting[0]] = run_mode(setting, args.tasks, args.latency_tasks, args.rate, pool)
    alone = None
    if not wanted or {"legacy", "dual_write 50%"} <= wanted:
        print("# publish cost of dual_write with no worker running …", flush=True)
        alone = publish_cost_alone()
    report(results, args.rate, alone)


def report(results: dict[str, dict[str, Any]], rate: float, alone: dict[str, float] | None = None) -> None:
    vanilla = results["vanilla Celery (RabbitMQ)"]
    print(f"\n| setting | submit (ms/task) | end-to-end (tasks/s) | vs vanilla | enqueue→start at {rate:.0f}/s |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        ratio = r["e2e_per_s"] / vanilla["e2e_per_s"]
        print(f"| {label} | {r['submit_ms']:.2f} | {r['e2e_per_s']:.0f} | {ratio:.2f}x | {summary_ms(r['latency'])} |")
    if "legacy" in results:
        single = results["legacy"]["submit_ms"]
        for label in ("dual_write 0%", "dual_write 50%", "dual_write 100%"):
            if label in results:
                ratio = results[label]["submit_ms"] / single
                print(f"{label} publish cost, worker draining: {ratio:.2f}x a single write (goal ≤ 1.3x)")
    if alone is not None:
        print(
            f"dual_write 50% publish cost, no worker: {alone['ratio']:.2f}x a single write (goal ≤ 1.3x);"
            f" {alone['dual_write']:.2f} ms per submit against legacy's {alone['legacy']:.2f} ms"
        )
    if "messaging rabbitmq" in results:
        ratio = results["messaging rabbitmq"]["e2e_per_s"] / vanilla["e2e_per_s"]
        print(f"messaging rabbitmq throughput: {ratio:.2f}x vanilla Celery on the same RabbitMQ (goal ≥ 0.8x)")
    for label, r in results.items():
        print(f"end-to-end, {label}: {r['cpu']}")
    p50 = {label: percentile(r["latency"], 50) * 1000 for label, r in results.items()}
    print("enqueue→start p50 (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in p50.items()))


if __name__ == "__main__":
    main()
