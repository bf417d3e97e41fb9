"""Task types that only tests register, through ``tasks.modules`` (``HELIX_TASK_MODULES``) in the
workers they start and by import in the test process."""

from __future__ import annotations

import contextlib
import time
from typing import Any

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
