"""Which queue a task type goes to (SPEC §3). Pure."""

from __future__ import annotations

QUEUE_PREFIX = "helixagent.tasks"
QUEUES = {
    "llm": f"{QUEUE_PREFIX}.llm",
    "debate": f"{QUEUE_PREFIX}.debate",
    "verification": f"{QUEUE_PREFIX}.verification",
    "notifications": f"{QUEUE_PREFIX}.notifications",
    "background": f"{QUEUE_PREFIX}.background",
}
ALL_QUEUES = tuple(QUEUES.values())

_BY_TYPE = {
    "llm_request": QUEUES["llm"],
    "llm.request": QUEUES["llm"],
    "debate": QUEUES["debate"],
    "debate.round": QUEUES["debate"],
    "verification": QUEUES["verification"],
    "verify": QUEUES["verification"],
    "notification": QUEUES["notifications"],
    "notify": QUEUES["notifications"],
}


def queue_for(task_type: str) -> str:
    """The queue of ``task_type``; anything unlisted goes to the background queue."""
    return _BY_TYPE.get(task_type, QUEUES["background"])
