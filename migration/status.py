"""The migration status report shared by ``GET /admin/migration/status`` and ``manage.py migration status``."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from helixagent.config import get_config
from helixagent.logging import get_logger
from migration import guard, modes, preflight, state
from migration.models import Discrepancy, MigrationState, ModeChange, QueueMessage
from tasks.models import Task, TaskEvent
from tasks.routing import ALL_QUEUES

log = get_logger("migration.status")


def broker_depths(broker: str, dead_letters: bool = True) -> dict[str, int]:
    """Ready messages per task queue on ``broker`` (Kafka: the group's lag on the work topic),
    and on RabbitMQ, unless ``dead_letters`` is false, in its dead-letter queue: messages no
    worker could process wait there."""
    from migration.legs.rabbitmq import DLQ
    from migration.router import open_leg

    leg = open_leg(broker)
    try:
        if broker == modes.KAFKA:
            return {"helixagent.tasks": leg.depth("helixagent.tasks")}
        return {queue: leg.depth(queue) for queue in (*ALL_QUEUES, DLQ) if dead_letters or queue != DLQ}
    finally:
        leg.close()


def report() -> dict[str, Any]:
    snapshot = state.current(max_age=0)
    config = get_config()
    brokers: dict[str, str] = {modes.POSTGRESQL: "ok"}
    depths: dict[str, dict[str, int]] = {
        modes.POSTGRESQL: dict(
            QueueMessage.objects.filter(queue__in=ALL_QUEUES).values_list("queue").annotate(n=Count("id"))
        )
    }
    for broker in (modes.RABBITMQ, modes.KAFKA):
        error = preflight.reach(broker, config)
        brokers[broker] = "ok" if error is None else f"down: {error}"
        if error is None:
            try:
                depths[broker] = broker_depths(broker)
            except Exception as exc:  # a depth is informative; the status must still answer
                log.warning("migration.depth_failed", extra={"broker": broker, "error": str(exc)})
    executed = dict(Task.objects.exclude(dispatch_source="").values_list("dispatch_source").annotate(n=Count("id")))
    failures = TaskEvent.objects.filter(kind="transition", from_status="running").filter(
        Q(to_status__in=["failed", "dead_letter"]) | Q(to_status="pending")
    )
    last_failure = failures.order_by("-created_at").values_list("created_at", flat=True).first()
    window = guard.measure()
    row = MigrationState.objects.filter(pk=1).first()
    return {
        "mode": snapshot.mode,
        "broker": snapshot.broker,
        "consumer_traffic_split": {
            modes.RABBITMQ: snapshot.rabbitmq_percent,
            modes.POSTGRESQL: 100 - snapshot.rabbitmq_percent,
        },
        "changed_at": snapshot.changed_at.isoformat() if snapshot.changed_at else None,
        "changed_by": snapshot.changed_by,
        "reason": snapshot.reason,
        "source": snapshot.source,
        "tasks_migrated": row.tasks_migrated if row else 0,
        "dual_write_count": Task.objects.filter(published_to__contains="+").count(),
        "discrepancies_found": Discrepancy.objects.count(),
        "error_count": failures.count(),
        "errors_per_minute": window.errors,
        "last_error_time": last_failure.isoformat() if last_failure else None,
        "rollback_count": ModeChange.objects.filter(rollback=True).count(),
        "auto_rollback": {
            "enabled": config.migration.auto_rollback,
            "error_threshold": config.migration.error_threshold,
            "latency_threshold": config.migration.latency_threshold,
            "min_samples": config.migration.min_samples,
            "last_minute": {"finished": window.finished, "errors": window.errors, "p99_wait_ms": window.p99_wait_ms},
        },
        "brokers": brokers,
        "queue_depths": depths,
        "executed_by_source": executed,
        "history": [
            {
                "mode": change.mode,
                "previous_mode": change.previous_mode,
                "rabbitmq_percent": change.rabbitmq_percent,
                "changed_at": change.changed_at.isoformat(),
                "changed_by": change.changed_by,
                "reason": change.reason,
                "source": change.source,
                "rollback": change.rollback,
            }
            for change in state.history(10)
        ],
    }
