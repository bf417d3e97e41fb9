"""Automatic rollback (SPEC §4, ``auto_rollback``): watch the last minute, roll back on a breach.

:func:`breach` is the pure rule: over a sliding one-minute window, failed executions
``≥ error_threshold`` or p99 queue wait ``≥ latency_threshold`` ms trigger a rollback, and a
window with fewer than ``min_samples`` finished executions never does. :func:`check` measures the
window from the task tables and acts; every worker runs it about once a second. One rollback per
breach: a rollback leaves ``legacy``, where the guard does not act, and the mode row is locked
while it changes, so two workers that see the same breach record one rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from helixagent.config import get_config
from helixagent.logging import get_logger
from migration import modes, rollback, state

log = get_logger("migration.guard")
WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Window:
    """What the last minute looked like."""

    finished: int  # executions that ended (completed, failed, retried, dead-lettered)
    errors: int  # executions that ended in an error
    p99_wait_ms: float | None  # p99 of start - due time over executions started in the window


def breach(window: Window, error_threshold: int, latency_threshold_ms: float, min_samples: int) -> str | None:
    """The reason to roll back, or None. Pure."""
    if window.finished < min_samples:
        return None
    if window.errors >= error_threshold:
        return f"{window.errors} failed executions in the last minute (error_threshold {error_threshold})"
    if window.p99_wait_ms is not None and window.p99_wait_ms >= latency_threshold_ms:
        wait = f"{window.p99_wait_ms:.0f} ms"
        return f"p99 queue wait {wait} in the last minute (latency_threshold {latency_threshold_ms:.0f} ms)"
    return None


def measure() -> Window:
    """The last minute, from the event table: ends of executions, and claims (whose time minus
    the task's creation is its queue wait); an index holds exactly those events."""
    from tasks.models import Task, TaskEvent

    since = timezone.now() - WINDOW
    ends = TaskEvent.objects.filter(kind="transition", from_status="running", created_at__gte=since)
    finished = ends.exclude(to_status="stuck").count()
    errors = ends.filter(Q(to_status__in=["failed", "dead_letter"]) | Q(to_status="pending")).count()
    started = Task.objects.filter(started_at__gte=since, retry_count=0)
    p99: float | None
    if connection.vendor == "postgresql":
        p99 = _pg_p99(since)
    else:
        waits = sorted(
            (t.started_at - t.created_at).total_seconds() * 1000
            for t in started.only("started_at", "created_at")
            if t.started_at
        )
        p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else None
    return Window(finished, errors, p99)


def _pg_p99(since: datetime) -> float | None:
    with connection.cursor() as cursor:
        cursor.execute(
            # claims of the last minute (an index range on the event table) joined to their rows
            "SELECT percentile_cont(0.99) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM e.created_at - t.created_at) * 1000)"
            " FROM helix_task_event e JOIN helix_task t ON t.id = e.task_id"
            " WHERE e.to_status = 'running' AND e.created_at >= %s AND t.retry_count = 0",
            [since],
        )
        row = cursor.fetchone()
    return float(row[0]) if row and row[0] is not None else None


def check() -> str | None:
    """Roll back when the current window breaches a threshold; returns the reason if it did."""
    config = get_config().migration
    if not config.auto_rollback or state.current().mode == modes.LEGACY:
        return None
    reason = breach(measure(), config.error_threshold, config.latency_threshold, config.min_samples)
    if reason and rollback.rollback(by="guard", source="auto_rollback", reason=reason):
        log.error("migration.auto_rollback", extra={"reason": reason})
        return reason
    return None
