"""Rollback to ``legacy`` (SPEC §4): switch the mode; every waiting task whose only copy is in a
broker then gets a PostgreSQL copy (:mod:`migration.stranded`, as after every switch)."""

from __future__ import annotations

from helixagent.logging import get_logger
from migration import state

log = get_logger("migration.rollback")


def rollback(*, by: str, source: str, reason: str = "") -> bool:
    """Switch to ``legacy`` (which re-enqueues broker-only tasks); False if already in ``legacy``."""
    if not state.roll_back(by=by, source=source, reason=reason):
        return False
    log.warning("migration.rolled_back", extra={"by": by, "source": source, "reason": reason})
    return True
