"""Task types that only tests register, through ``tasks.modules`` (``HELIX_TASK_MODULES``) in the
workers they start and by import in the test process."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from typing import Any

from billiard.pool import Worker
from celery.exceptions import SoftTimeLimitExceeded

from tasks.registry import TaskContext, task_type


@task_type("tests.stubborn")
def stubborn(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds``, carrying on through a soft time limit as a careless ``except`` would."""
    until = time.monotonic() + float(payload.get("seconds", 30))
    while time.monotonic() < until:
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(0.1)
    return {"slept": payload.get("seconds", 30)}


@task_type("tests.jam_pool")
def jam_pool(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """End this prefork pool process holding the lock of the pool's result queue, as the OOM
    killer would end a process in the middle of writing a result there."""
    pool_process = next(obj for obj in gc.get_objects() if isinstance(obj, Worker))
    pool_process.outq._wlock.acquire()
    os._exit(1)
