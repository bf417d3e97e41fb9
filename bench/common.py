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


#: process groups of :func:`cpu_seconds`: (name, test on the process's comm and command line)
CPU_GROUPS: list[tuple[str, Callable[[str, str], bool]]] = [
    ("PostgreSQL", lambda comm, cmd: comm == "postgres"),
    ("RabbitMQ", lambda comm, cmd: comm in ("beam.smp", "erl_child_setup", "epmd")),
    ("Kafka", lambda comm, cmd: comm == "java" and "kafka" in cmd),
    ("worker", lambda comm, cmd: "celery" in cmd and " worker" in cmd),
]


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) used so far by each process group, by this benchmark process
    (``producer``) and by everything else (``other``, kernel threads included), from ``/proc``.

    A process counts with the CPU of the children it has reaped (``cutime``, ``cstime``), so one
    that ends between two readings (the database backend of a closed connection, a pool child)
    still counts, under its parent's group, for what it used after the first reading. An ended
    child not yet reaped (a zombie, whose command line is gone) counts under its parent's group
    until then."""
    tick = os.sysconf("SC_CLK_TCK")
    groups: dict[int, str] = {}
    zombies: list[tuple[int, float]] = []  # (parent pid, seconds)
    used: dict[str, float] = {name: 0.0 for name, _ in CPU_GROUPS} | {"producer": 0.0, "other": 0.0}
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
        seconds = sum(int(value) for value in fields[11:15]) / tick  # utime, stime, cutime, cstime
        if fields[0] == "Z":
            zombies.append((int(fields[1]), seconds))
            continue
        if int(entry.name) == os.getpid():
            group = "producer"
        else:
            group = next((name for name, test in CPU_GROUPS if test(comm, cmd)), "other")
        groups[int(entry.name)] = group
        used[group] += seconds
    for parent, seconds in zombies:
        used[groups.get(parent, "other")] += seconds
    return used


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


def cpu_per_task(before: dict[str, float], after: dict[str, float], tasks: int) -> str:
    """``group ms, …`` of CPU per task between two :func:`cpu_seconds` readings."""
    parts = [f"{name} {(after[name] - before[name]) / tasks * 1000:.2f}" for name in after]
    total = sum(after.values()) - sum(before.values())
    return f"CPU ms per task: total {total / tasks * 1000:.2f} = " + ", ".join(parts)


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
