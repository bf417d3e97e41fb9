"""A prefork pool that stopped taking work.

On a synchronous transport such as the router, Celery's prefork pool is billiard's classic pool,
whose processes share one result queue guarded by a lock. A process killed while it writes there
(the OOM killer at the wrong instant) leaves that lock taken for good, and every other process
blocks at its next write: the worker executes nothing again while it keeps its messages. Its
main process still answers Celery's ping, so a liveness probe does not show it.

:class:`StallWatch` notices it: a job handed to the pool that no process has taken for
``tasks.pool_stall_timeout`` seconds while some process has no job. The worker then logs
``worker.pool_stalled`` and ends at once, pool processes included, for its supervisor to start
afresh. Its messages return to their queues (a PostgreSQL lease runs out, RabbitMQ requeues what
a closed channel held, Kafka reassigns the partitions) and the stuck sweep recovers the
executions it was running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from helixagent.logging import get_logger

log = get_logger("tasks.pool_stall")


class StallWatch:
    """Tells, from samples of the pool's jobs, whether one has waited too long for a process."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._waiting_since: dict[int, float] = {}

    def stalled(self, jobs: Iterable[tuple[int, bool]], processes: int, now: float) -> bool:
        """``jobs``: (job id, taken by a process) for every job handed to the pool and not done."""
        jobs = list(jobs)
        waiting = [job for job, taken in jobs if not taken]
        if len(jobs) - len(waiting) >= processes:  # every process has a job: a backlog
            self._waiting_since = dict.fromkeys(waiting, now)
            return False
        self._waiting_since = {job: self._waiting_since.get(job, now) for job in waiting}
        return any(now - since >= self.timeout for since in self._waiting_since.values())


def _jobs(pool: Any) -> list[tuple[int, bool]]:
    while True:
        try:  # the pool's own threads change the cache meanwhile
            return [(job_id, bool(job._accepted)) for job_id, job in list(pool._cache.items()) if not job.ready()]
        except RuntimeError:
            continue


def _end_worker(pool: Any) -> None:
    for process in list(pool._pool):
        with contextlib.suppress(OSError):  # gone already
            os.kill(process.pid, signal.SIGKILL)
    os._exit(os.EX_SOFTWARE)


def watch(pool: Any, timeout: float, stop: threading.Event) -> None:
    """Sample ``pool`` (a billiard pool) every second until ``stop``; end the worker when stalled."""
    stall = StallWatch(timeout)
    while not stop.wait(1.0):
        if stall.stalled(_jobs(pool), pool._processes, time.monotonic()):
            log.critical(
                "worker.pool_stalled",
                extra={"seconds": timeout, "processes": pool._processes, "jobs": len(pool._cache)},
            )
            _end_worker(pool)
