"""The task state machine as data: which transitions exist and which states are terminal.

Pure: no I/O. :mod:`tasks.transitions` applies these rules with conditional UPDATEs.
"""

from __future__ import annotations

PENDING = "pending"
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
DEAD_LETTER = "dead_letter"
STUCK = "stuck"

STATUSES = (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED, DEAD_LETTER, STUCK)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, DEAD_LETTER})
#: states a worker may claim from: the claim is the only path into ``running``.
CLAIMABLE = (PENDING, QUEUED)
CANCELLABLE = (PENDING, QUEUED, RUNNING)

TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({PENDING}),
    PENDING: frozenset({QUEUED, RUNNING, CANCELLED}),
    QUEUED: frozenset({RUNNING, CANCELLED}),
    # running → pending is a retry with backoff; → stuck when its heartbeat stops.
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, DEAD_LETTER, PENDING, STUCK}),
    STUCK: frozenset({PENDING, DEAD_LETTER}),  # a lost execution is a failed attempt
    DEAD_LETTER: frozenset({PENDING}),  # re-drive
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

PRIORITIES = ("critical", "high", "normal", "low", "background")
#: AMQP-style message priority (higher runs first) for each task priority.
MESSAGE_PRIORITY = {"critical": 9, "high": 7, "normal": 5, "low": 3, "background": 1}


def can_transition(current: str | None, target: str) -> bool:
    """Whether the state machine allows ``current → target``."""
    return target in TRANSITIONS.get(current, frozenset())


def retry_delay(retry_count: int, base: float, cap: float, configured: float | None = None) -> float:
    """Exponential backoff in seconds before retry number ``retry_count + 1``.

    ``configured`` (the task's ``retry_delay_seconds``) is the first delay; each later retry
    doubles it. Without it the delay is ``base ** retry_count``. Never above ``cap``.
    """
    if configured is not None:
        return float(min(cap, configured * (2**retry_count)))
    return float(min(cap, base**retry_count))
