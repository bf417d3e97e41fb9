"""migrate-pending (SPEC §4): move tasks waiting in the PostgreSQL queue to the active broker.

Batch by batch, in one transaction each: lock up to ``batch_size`` waiting task messages
(``FOR UPDATE SKIP LOCKED``, so running workers keep claiming others), publish them to the broker
of ``messaging`` mode with confirms, delete them, mark their tasks migrated and count them. An
interruption rolls the open batch back: its messages stay in the PostgreSQL queue (some may also
be in the broker already; the claim on the task row runs a task once), so the command is
idempotent and safe to rerun. Messages leased by a worker (being executed) are left alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from helixagent.logging import get_logger
from migration import modes, state
from migration.exceptions import BrokerUnreachable, MigrationError
from migration.legs.base import LegUnavailable
from migration.models import MigrationState, QueueMessage
from tasks.routing import ALL_QUEUES

log = get_logger("migration.migrate_pending")


@dataclass
class Progress:
    migrated: int = 0
    failed: int = 0
    remaining: int = 0
    error: str = ""


def waiting() -> int:
    """Task messages in the PostgreSQL queue that no worker holds."""
    return QueueMessage.objects.filter(queue__in=ALL_QUEUES, visible_at__lte=time.time()).count()


def migrate_pending(batch_size: int = 2000, on_batch: Callable[[Progress], None] | None = None) -> Progress:
    """Move every waiting task message to the broker; report migrated / failed / remaining."""
    from tasks import service
    from tasks.models import Task

    snapshot = state.current(max_age=0)
    if snapshot.mode != modes.MESSAGING:
        raise MigrationError(
            f"migrate-pending moves tasks to the broker of messaging mode; the mode is {snapshot.mode}",
            {"mode": snapshot.mode},
        )
    leg = service.producer().channel.leg(snapshot.broker)
    if leg is None:
        raise BrokerUnreachable(f"{snapshot.broker} is unreachable", {"broker": snapshot.broker})
    progress = Progress(remaining=waiting())
    while True:
        try:
            with transaction.atomic():
                rows = list(
                    QueueMessage.objects.select_for_update(skip_locked=True)
                    .filter(queue__in=ALL_QUEUES, visible_at__lte=time.time())
                    .order_by("id")
                    .values_list("id", "queue", "payload", "message_id")[:batch_size]
                )
                if not rows:
                    break
                leg.publish_batch([(queue, json.loads(payload)) for _id, queue, payload, _mid in rows])
                QueueMessage.objects.filter(id__in=[row[0] for row in rows]).delete()
                task_ids = [row[3] for row in rows if row[3]]
                Task.objects.filter(pk__in=task_ids).update(migrated_at=timezone.now(), published_to=snapshot.broker)
                MigrationState.objects.filter(pk=1).update(tasks_migrated=F("tasks_migrated") + len(rows))
        except LegUnavailable as exc:
            progress.failed += len(rows)
            progress.error = str(exc)
            log.error("migration.migrate_pending_failed", extra={"error": str(exc), "batch": len(rows)})
            break
        progress.migrated += len(rows)
        progress.remaining = max(0, progress.remaining - len(rows))
        if on_batch:
            on_batch(progress)
    progress.remaining = waiting()
    log.info("migration.migrate_pending", extra={**progress.__dict__, "broker": snapshot.broker})
    return progress
