"""The migration status report shared by ``GET /admin/migration/status`` and ``manage.py migration status``."""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from helixagent.config import get_config
from helixagent.logging import get_logger
from migration import modes, preflight, state
from migration.models import QueueMessage
from tasks.models import Task
from tasks.routing import ALL_QUEUES

log = get_logger("migration.status")


def broker_depths(broker: str) -> dict[str, int]:
    """Ready messages per task queue on ``broker`` (Kafka: the group's lag on the work topic)."""
    from migration.router import open_leg

    leg = open_leg(broker)
    try:
        if broker == modes.KAFKA:
            return {"helixagent.tasks": leg.depth("helixagent.tasks")}
        return {queue: leg.depth(queue) for queue in ALL_QUEUES}
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
            }
            for change in state.history(10)
        ],
    }
