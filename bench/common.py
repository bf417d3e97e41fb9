"""What every benchmark shares: the machine description, databases, worker processes, statistics."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> str:
    """One line naming the CPU, cores, memory, Python and PostgreSQL versions."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        mem_kb = int(meminfo.read_text().split()[1])
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kb / 1024 / 1024:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def service_urls(rabbitmq: bool = True) -> tuple[str, str]:
    """``DATABASE_URL`` (PostgreSQL) and ``RABBITMQ_URL`` from the environment; a benchmark stops
    with how to set them when one it needs is missing."""
    base, rabbitmq_url = os.environ.get("DATABASE_URL", ""), os.environ.get("RABBITMQ_URL", "")
    if not base.startswith("postgresql://") or (rabbitmq and not rabbitmq_url):
        needed = "DATABASE_URL (PostgreSQL) and RABBITMQ_URL" if rabbitmq else "DATABASE_URL (PostgreSQL)"
        raise SystemExit(f'{needed} must be set: eval "$(scripts/services.sh env)" first')
    return base, rabbitmq_url


def fresh_database(base_url: str, name: str) -> str:
    """Drop and create database ``name`` next to ``base_url``'s; return its URL."""
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        version = conn.execute("SHOW server_version").fetchone()
    print(f"# PostgreSQL {version[0] if version else '?'}: database {name}")
    return urlunparse(urlparse(base_url)._replace(path=f"/{name}"))


def django_on_fresh_database(base_url: str, name: str) -> None:
    """Point this process's Django at a fresh database ``name`` beside ``base_url``'s, set
    Django up and migrate the database."""
    os.environ["DATABASE_URL"] = fresh_database(base_url, name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helixagent.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_worker(
    app: str, env: dict[str, str], log: Path, concurrency: int = 8, pool: str = "threads", queues: str | None = None
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--loglevel",
        "WARNING",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        f"bench-{pool}@%h",
    ]
    if queues:
        command += ["--queues", queues]
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll until ``predicate()``; return the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


#: process groups of :func:`cpu_reading`: (name, test on the process's comm and command line)
CPU_GROUPS: list[tuple[str, Callable[[str, str], bool]]] = [
    ("PostgreSQL", lambda comm, cmd: comm == "postgres"),
    ("RabbitMQ", lambda comm, cmd: comm in ("beam.smp", "erl_child_setup", "epmd")),
    ("Kafka", lambda comm, cmd: comm == "java" and "kafka" in cmd),
    ("worker", lambda comm, cmd: "celery" in cmd and " worker" in cmd),
]


#: one :func:`cpu_reading`: pid → (group, parent pid, CPU clock ticks with its reaped children's)
CpuReading = dict[int, tuple[str, int, int]]


def cpu_reading() -> CpuReading:
    """The CPU time (user + system, in clock ticks) used so far by every process, with its
    group: one of :data:`CPU_GROUPS`, ``producer`` (this benchmark process) or ``other``
    (everything else, kernel threads included), from ``/proc``. :func:`cpu_used` turns two
    readings into seconds per group.

    A process counts with the CPU of the children it has reaped (``cutime``, ``cstime``), so one
    that ends between two readings (the database backend of a closed connection, a pool child)
    still counts, under its parent's group. An ended child not yet reaped (a zombie, whose
    command line is gone) counts under its parent's group too."""
    found: dict[int, tuple[str, int, int, bool]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
        if int(entry.name) == os.getpid():
            group = "producer"
        else:
            group = next((name for name, test in CPU_GROUPS if test(comm, cmd)), "other")
        found[int(entry.name)] = (group, int(fields[1]), ticks, fields[0] == "Z")
    return {
        pid: (found[parent][0] if zombie and parent in found else group, parent, ticks)
        for pid, (group, parent, ticks, zombie) in found.items()
    }


def cpu_used(before: CpuReading, after: CpuReading) -> dict[str, float]:
    """CPU seconds each group used between two :func:`cpu_reading` readings.

    A process that ended in between shows in its parent's count of reaped children, with the
    CPU it had used before the first reading, which is taken off again. A parent that does not
    count its children (one that ignores ``SIGCHLD``, say) shows nothing of them, and then
    nothing is taken off: the ended process's CPU after the first reading is missed instead of
    its whole past being subtracted from its group."""
    used = {name: 0 for name, _ in CPU_GROUPS} | {"producer": 0, "other": 0}
    for pid, (group, _parent, ticks) in after.items():
        used[group] += ticks - (before[pid][2] if pid in before else 0)
    ended: dict[int, int] = {}  # parent pid → CPU its ended children had at the first reading
    for pid, (_group, parent, ticks) in before.items():
        if pid not in after:
            ended[parent] = ended.get(parent, 0) + ticks
    for parent, ticks in ended.items():
        if parent in before and parent in after and after[parent][2] - before[parent][2] >= ticks:
            used[after[parent][0]] -= ticks
    tick = os.sysconf("SC_CLK_TCK")
    return {name: ticks / tick for name, ticks in used.items()}


def wal_flushes(execute: Callable[[str], Sequence[Any]] | None = None) -> int:
    """WAL flushes to disk so far (``pg_stat_wal.wal_sync``), counting those of the session that
    ``execute`` runs SQL on (Django's connection by default): a session reports its statistics
    lazily, and this makes it report now. A durable commit of a change flushes once; one that does
    not wait for the flush leaves it to the WAL writer, which flushes many at a time."""
    if execute is None:
        from django.db import connection

        def execute(statement: str) -> Sequence[Any]:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return list(cursor.fetchall())

    execute("SELECT pg_stat_force_next_flush()")
    return int(execute("SELECT wal_sync FROM pg_stat_wal")[0][0])


def cpu_per_task(before: CpuReading, after: CpuReading, tasks: int) -> str:
    """``group ms, …`` of CPU per task between two :func:`cpu_reading` readings."""
    used = cpu_used(before, after)
    parts = [f"{name} {seconds / tasks * 1000:.2f}" for name, seconds in used.items()]
    return f"CPU ms per task: total {sum(used.values()) / tasks * 1000:.2f} = " + ", ".join(parts)


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: Sequence[float]) -> str:
    return f"p50 {percentile(values, 50) * 1000:.1f} ms / p99 {percentile(values, 99) * 1000:.1f} ms (n={len(values)})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
