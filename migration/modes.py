"""The rules of the three migration modes (SPEC §4), as pure functions.

Everything here decides from a mode, a broker name and a task id; nothing touches a database or
a broker, so the router, the state store and the tests share one definition of each rule.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

LEGACY, DUAL_WRITE, MESSAGING = "legacy", "dual_write", "messaging"
MODES = (LEGACY, DUAL_WRITE, MESSAGING)
POSTGRESQL, RABBITMQ, KAFKA = "postgresql", "rabbitmq", "kafka"

#: header saying how many copies of a message were published: ``dual`` copies obey the split,
#: a ``sole`` copy is the only one and always runs.
COPIES_HEADER = "helix_copies"
#: header naming the legs a message is published to (``postgresql+rabbitmq``): the publisher
#: decides once, records it on the task row, and the router follows it.
LEGS_HEADER = "helix_legs"
#: header of the two copies of a ``dual_write`` publish: the leg whose copy runs the task, decided
#: by the split when it was published (so a split moved between the two copies' deliveries
#: cannot make both of them shadows).
RUNNER_HEADER = "helix_runner"
#: header the router adds on delivery: the leg the executing copy came from.
SOURCE_HEADER = "helix_source"
#: headers the publisher adds so a shadow copy can be checked against its task row.
TYPE_HEADER = "helix_type"
CHECKSUM_HEADER = "helix_checksum"

_NEIGHBOURS = {LEGACY: {DUAL_WRITE}, DUAL_WRITE: {LEGACY, MESSAGING}, MESSAGING: {DUAL_WRITE, LEGACY}}


class TransitionRefused(ValueError):
    """A mode change the transition rules do not allow (``legacy → messaging`` needs ``force``)."""


def check_transition(current: str, target: str, force: bool = False) -> None:
    """Allow ``legacy ↔ dual_write ↔ messaging``, any mode back to ``legacy``, and
    ``legacy → messaging`` only when forced."""
    if target not in MODES:
        raise TransitionRefused(f"unknown mode {target!r}; expected one of {list(MODES)}")
    if current == target or target in _NEIGHBOURS[current] or force:
        return
    raise TransitionRefused(f"{current} → {target} skips dual_write; pass force to do it anyway")


def required_brokers(mode: str, broker: str) -> tuple[str, ...]:
    """Brokers a mode cannot work without (the preflight check reaches each before a switch)."""
    if mode == DUAL_WRITE:
        return (RABBITMQ,)
    if mode == MESSAGING:
        return (broker,)
    return ()


def publish_legs(mode: str, broker: str) -> tuple[str, ...]:
    """Where a new task's message goes; the first leg named is written inside the submitting
    transaction when it is PostgreSQL, the others after commit."""
    if mode == DUAL_WRITE:
        return (POSTGRESQL, RABBITMQ)
    if mode == MESSAGING:
        return (broker,)
    return (POSTGRESQL,)


def consume_legs(mode: str, broker: str) -> tuple[str, ...]:
    """Where workers take messages from. PostgreSQL is read in every mode: it holds what was
    published before a switch and the fallback copies of a failed broker publish."""
    if mode == DUAL_WRITE:
        return (POSTGRESQL, RABBITMQ)
    if mode == MESSAGING:
        return (POSTGRESQL, broker)
    return (POSTGRESQL,)


def bucket(task_id: str) -> int:
    """The task's stable bucket in ``0..99`` (SHA-256 of its id, so every process agrees)."""
    digest = hashlib.sha256(str(task_id).lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def executing_source(task_id: str, rabbitmq_percent: int) -> str:
    """In ``dual_write``, which copy runs the task: RabbitMQ below the split, else PostgreSQL."""
    return RABBITMQ if bucket(task_id) < rabbitmq_percent else POSTGRESQL


def runs_here(leg: str, copies: str, mode: str, task_id: str, rabbitmq_percent: int, runner: str = "") -> bool:
    """Whether a copy delivered by ``leg`` executes (True) or is only checked as a shadow.

    Only the two copies of a ``dual_write`` publish obey the split, and only while the mode is
    ``dual_write``: after a switch the copy that is still consumed runs (the claim on the task
    row keeps a second copy from running it again). The split is the one the copies carry
    (``runner``, see :data:`RUNNER_HEADER`); a copy published without it follows the current one."""
    if copies != "dual" or mode != DUAL_WRITE:
        return True
    return (runner or executing_source(task_id, rabbitmq_percent)) == leg


def payload_checksum(payload: Any) -> str:
    """SHA-256 of the canonical JSON of a payload (key order and spacing do not count)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
