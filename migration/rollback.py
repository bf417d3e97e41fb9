"""Rollback to ``legacy`` (SPEC §4): switch the mode, then give every waiting task a PostgreSQL copy.

After the switch, workers consume PostgreSQL only (plus brokers they still hold open), so a task
whose only copy sits in a broker would wait there. :func:`rollback` re-enqueues on PostgreSQL
every ``queued`` task with no message in the PostgreSQL queue; a copy it duplicates is harmless
(the claim runs a task once).
"""

from __future__ import annotations

from helixagent.logging import get_logger
from migration import state
from migration.models import QueueMessage

log = get_logger("migration.rollback")
BATCH = 500


def rollback(*, by: str, source: str, reason: str = "") -> bool:
    """Switch to ``legacy`` (which re-enqueues broker-only tasks); False if already in ``legacy``."""
    if not state.roll_back(by=by, source=source, reason=reason):
        return False
    log.warning("migration.rolled_back", extra={"by": by, "source": source, "reason": reason})
    return True


def reenqueue_broker_only() -> int:
    """Give every queued task without a PostgreSQL queue message a PostgreSQL copy."""
    moved = _reenqueue()
    log.info("migration.reenqueued", extra={"count": moved})
    return moved


def _reenqueue() -> int:
    from tasks import service
    from tasks.models import Task

    moved = 0
    last = None
    while True:
        waiting = Task.objects.filter(status="queued").order_by("pk").values_list("pk", flat=True)
        if last is not None:
            waiting = waiting.filter(pk__gt=last)
        batch = list(waiting[:BATCH])
        if not batch:
            return moved
        last = batch[-1]
        ids = [str(pk) for pk in batch]
        copied = set(QueueMessage.objects.filter(message_id__in=ids).values_list("message_id", flat=True))
        moved += service.reenqueue([pk for pk in ids if pk not in copied])
