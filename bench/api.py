"""``POST /v1/tasks`` through uvicorn, with the API's connection pool and without it, in one run.

The API process borrows PostgreSQL connections from a pool (``api.database_pool``). The baseline
is the same server with the pool off (``api.database_pool: 0``): Django's persistent connections,
which under ASGI open a new session for every request (each request runs on a thread of its own).
Each variant serves ``--requests`` submits of a ``noop`` task from ``--clients`` keep-alive
clients, with no worker running; printed: submits accepted (202) per second and their latency
p50/p99, the answers that were not 202, the PostgreSQL sessions opened, and the CPU per request
of the API process and of PostgreSQL.

Usage: ``python -m bench.api`` with the variables of ``scripts/services.sh env`` set.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from bench.common import (
    RESULTS,
    ROOT,
    cpu_reading,
    cpu_used,
    django_on_fresh_database,
    machine,
    service_urls,
    summary_ms,
    wait_until,
)

PORT = 18090
BODY = json.dumps({"task_type": "noop"})


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) that process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sessions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def submit(headers: dict[str, str], count: int) -> list[tuple[int, float]]:
    """``count`` submits on one keep-alive connection; the status and latency (s) of each."""
    client = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    answers = []
    for _ in range(count):
        started = time.perf_counter()
        client.request("POST", "/v1/tasks", BODY, headers)
        response = client.getresponse()
        response.read()
        answers.append((response.status, time.perf_counter() - started))
    client.close()
    return answers


def run(url: str, key: str, pool: int, requests: int, clients: int) -> None:
    env = {**os.environ, "DATABASE_URL": url, "HELIX_API_DATABASE_POOL": str(pool), "MIGRATION_MODE": "legacy"}
    log = (RESULTS / f"api-pool-{pool}.log").open("w")
    command = [sys.executable, "-m", "uvicorn", "helixagent.asgi:application", "--port", str(PORT)]
    server = subprocess.Popen(
        [*command, "--log-level", "warning"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:

        def up() -> bool:
            try:
                return submit(headers, 1)[0][0] == 202
            except OSError:
                return False

        wait_until(up, 30, 0.2)
        submit(headers, 50)  # warm-up: imports, prepared statements, the pool's first sessions
        sessions_before, cpu_before, api_before = sessions(url), cpu_reading(), process_cpu(server.pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as threads:
            parts = threads.map(submit, [headers] * clients, [requests // clients] * clients)
            answers = [answer for part in parts for answer in part]
        elapsed = time.perf_counter() - started
        api_cpu, database_cpu = process_cpu(server.pid) - api_before, cpu_used(cpu_before, cpu_reading())["PostgreSQL"]
        opened = sessions(url) - sessions_before - 1  # less this reading's own
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    name = f"pool of {pool}" if pool else "no pool (a session per request)"
    count = len(answers)
    latencies = [latency for status, latency in answers if status == 202]
    failed = Counter(status for status, _latency in answers if status != 202)
    per_request = f"API {api_cpu / count * 1000:.2f} ms, PostgreSQL {database_cpu / count * 1000:.2f} ms"
    errors = ", ".join(f"{n} x {status}" for status, n in sorted(failed.items())) or "none"
    print(
        f"| {name} | {len(latencies) / elapsed:.0f} | {summary_ms(latencies)} | {errors} | {opened} | {per_request} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pool", type=int, default=10, help="api.database_pool of the pooled run")
    args = parser.parse_args()
    base, _ = service_urls(rabbitmq=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"# machine: {machine()}")
    django_on_fresh_database(base, "helixagent_bench_api")
    from django.db import connection

    from tasks.models import ApiToken

    _token, key = ApiToken.issue("bench")
    url = os.environ["DATABASE_URL"]
    connection.close()
    print(f"\n| POST /v1/tasks, {args.requests} requests from {args.clients} clients ", end="")
    print("| accepted/s | latency (202) | not accepted | sessions opened | CPU per request |")
    print("|---|---|---|---|---|---|")
    run(url, key, 0, args.requests, args.clients)
    run(url, key, args.pool, args.requests, args.clients)


if __name__ == "__main__":
    main()
