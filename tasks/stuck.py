"""Which stale executions a sweeper may recover as stuck.

A running task's heartbeat goes stale for two reasons: its worker died, or no worker could write
to the database, because the database hung or restarted for longer than the stuck threshold. In
the second case the heartbeats of live workers are stale too when the database answers again,
and a sweep at that moment would recover tasks that are still running, so each would run twice.
A live worker writes its next heartbeat within one interval of the database's return. So an
execution is recovered only when a later sweep, at least ``confirm_after`` seconds after the
first sweep that found it stale, finds it again with the very same heartbeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple


class Stale(NamedTuple):
    """A running execution whose heartbeat is older than the stuck threshold."""

    task_id: uuid.UUID
    execution_id: uuid.UUID | None
    heartbeat_at: datetime | None


class StaleWatch:
    """The stale executions one sweeper has seen, and since when (its monotonic clock)."""

    def __init__(self) -> None:
        self._first_seen: dict[Stale, float] = {}

    def confirmed(self, found: Iterable[Stale], now: float, confirm_after: float) -> list[Stale]:
        """Remember this sweep's ``found`` (``now`` is taken after the database answered) and
        return those that earlier sweeps found unchanged at least ``confirm_after`` seconds ago.
        An execution that is no longer found, or whose heartbeat moved, starts over."""
        self._first_seen = {stale: self._first_seen.get(stale, now) for stale in found}
        return [stale for stale, first in self._first_seen.items() if now - first >= confirm_after]
