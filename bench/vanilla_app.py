"""The baseline: vanilla Celery on kombu's own SQLAlchemy transport, on the same PostgreSQL.

``BENCH_BROKER_URL`` is ``sqla+postgresql+psycopg://…``. The task appends a line
``<enqueue→start latency> <start time>`` (seconds) to ``BENCH_LATENCY_FILE`` when one is set.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("vanilla", broker=os.environ.get("BENCH_BROKER_URL", "memory://"))
app.conf.update(
    task_ignore_result=True, worker_prefetch_multiplier=4, task_acks_late=True, broker_connection_retry_on_startup=True
)


@app.task(name="bench.noop")
def noop(sent_at: float | None = None) -> None:
    path = os.environ.get("BENCH_LATENCY_FILE")
    if sent_at is not None and path:
        with open(path, "a") as out:
            now = time.time()
            out.write(f"{now - sent_at} {now}\n")
