"""The transactional outbox of broker copies (SPEC §4, Consistency).

A broker copy is written to ``helix_outbox`` in the transaction that inserts its task row; after
commit the submitting process publishes it with a confirm and deletes the record. :func:`relay`,
run by every worker's maintenance loop, publishes records older than :data:`GRACE` seconds: the
ones whose publisher died between commit and publish. A copy published twice is harmless (the
claim on the task row runs a task once).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from helixagent.logging import get_logger
from migration.models import OutboxMessage

if TYPE_CHECKING:
    from migration.router import Channel

log = get_logger("migration.outbox")
#: how old a record must be before the relay takes it over from its publisher.
GRACE = timedelta(seconds=5)


def record(leg: str, queue: str, task_id: str, payload: str) -> int:
    """Store a broker copy in the caller's transaction; returns the record id."""
    return OutboxMessage.objects.create(leg=leg, queue=queue, task_id=task_id, payload=payload).pk


def done(record_id: int) -> None:
    OutboxMessage.objects.filter(pk=record_id).delete()


def relay(channel: Channel, limit: int = 500) -> int:
    """Publish records left behind by their publishers; returns how many were sent."""
    sent = 0
    with transaction.atomic():
        stale = OutboxMessage.objects.select_for_update(skip_locked=True).filter(created_at__lt=timezone.now() - GRACE)
        for entry in stale.order_by("id")[:limit]:
            channel.publish_to_broker(entry.leg, entry.queue, json.loads(entry.payload))
            entry.delete()
            sent += 1
    if sent:
        log.warning("migration.outbox_relayed", extra={"count": sent})
    return sent
