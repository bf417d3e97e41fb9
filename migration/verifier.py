"""Consistency of broker copies with their task rows (SPEC §4, Discrepancies).

Three kinds, each stored once per task and leg (``helix_discrepancy``), counted, and written as
one JSON line to ``logs/migration-discrepancies.log`` when ``log_discrepancies`` is on:

* ``mismatch``: a copy whose task type or payload checksum (message headers) differs from its row;
* ``missing_copy``: a ``dual_write`` copy not seen within ``dual_write_timeout`` seconds;
* ``orphan_copy``: a copy whose task row does not exist.

The router checks shadow copies and the runner checks executing ones as they arrive;
:func:`verify_due`, run by the workers' maintenance loop, finds missing copies. When the copy that
should have run the task is the one missing, it re-enqueues the task on PostgreSQL, so a lost
copy delays a task but never loses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from helixagent.config import get_config
from helixagent.logging import get_logger
from migration import modes, state
from migration.models import Discrepancy

log = get_logger("migration.verifier")
#: how far back the verifier looks for unverified copies (bounds its query to the recent-tasks index).
VERIFY_WINDOW = timedelta(hours=1)
discrepancy_log = get_logger("migration.discrepancies")


def problem(task_type: str, payload: Any, headers: Mapping[str, Any]) -> str:
    """What differs between a copy's headers and its row ("" when they agree). Pure."""
    if isinstance(payload, str):
        payload = json.loads(payload)
    if headers.get(modes.TYPE_HEADER) not in (None, task_type):
        return f"task type {headers.get(modes.TYPE_HEADER)!r} differs from the row's {task_type!r}"
    if headers.get(modes.CHECKSUM_HEADER) not in (None, modes.payload_checksum(payload)):
        return "payload checksum differs from the row's payload"
    return ""


def record(kind: str, task_id: str, leg: str, detail: str = "") -> bool:
    """Store and log one discrepancy; False when this one was already recorded. A copy names its
    own task id; one longer than the column (another producer's) is stored cut to fit: refused,
    it would send the copy back to its queue and the check would fail on it again and again."""
    task_id = task_id[: Discrepancy._meta.get_field("task_id").max_length]
    try:
        with transaction.atomic():
            Discrepancy.objects.create(kind=kind, task_id=task_id, leg=leg, detail=detail)
    except IntegrityError:
        return False
    fields = {"kind": kind, "task_id": task_id, "leg": leg, "detail": detail}
    if get_config().migration.log_discrepancies:
        discrepancy_log.warning("migration.discrepancy", extra=fields)
    else:
        log.info("migration.discrepancy", extra=fields)
    return True


def verify_due(limit: int = 1000) -> int:
    """Check dual_write tasks older than ``dual_write_timeout``: both copies must have been seen.

    A task still ``queued`` lost the copy meant to run it: it is recorded and re-enqueued on
    PostgreSQL. A task that ran more than ``dual_write_timeout`` ago but whose other copy was
    never checked lost its shadow."""
    from tasks import service
    from tasks.models import Task

    config = get_config().migration
    if not config.verify_consistency or state.current().mode == modes.LEGACY:
        return 0  # nothing publishes two copies in legacy; a rollback re-enqueued what waited
    cutoff = timezone.now() - timedelta(seconds=config.dual_write_timeout)
    recent = Task.objects.filter(created_at__lt=cutoff, created_at__gte=cutoff - VERIFY_WINDOW)
    due = recent.filter(verified_at__isnull=True, published_to__contains="+")
    # A shadow copy is judged from when its task ran: a worker that was away consumes both copies
    # at once when it comes back, and the router settles shadows in batches after the run.
    due = due.exclude(shadow_checked_at__isnull=True, started_at__gte=cutoff)
    checked = []
    for task in due.order_by("created_at")[:limit]:
        checked.append(task.pk)
        legs = task.published_to.split("+")
        if task.status == "queued":
            # its copies carry the runner the split chose when they were published (``updated_at``)
            runner = modes.executing_source(str(task.pk), state.split_at(task.updated_at))
            record("missing_copy", str(task.pk), runner, "no copy ran the task within dual_write_timeout")
            service.reenqueue([task.pk])
        elif task.dispatch_source and task.shadow_checked_at is None:
            shadow = next((leg for leg in legs if leg != task.dispatch_source), "")
            if shadow:
                record("missing_copy", str(task.pk), shadow, "the shadow copy was not seen within dual_write_timeout")
    if checked:
        Task.objects.filter(Q(pk__in=checked)).update(verified_at=timezone.now())
    return len(checked)
