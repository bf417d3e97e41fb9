"""How a task's event feed meets a database outage (:mod:`tasks.streams`), with the poll replaced:
the feed's own timing, without services. A real PostgreSQL restart under open streams is in
``tests/acceptance/test_task_streams.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError

from tasks import streams


def collect(feed: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [event async for event in feed]

    return asyncio.run(run())


def polls(*answers: Any) -> Callable[[str, int], Any]:
    """A poll giving ``answers`` in turn (an exception is raised), the last one for ever."""
    queue = list(answers)

    def poll(task_id: str, last_id: int) -> Any:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return poll


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(streams, "OUTAGE_RETRY_SECONDS", 0.01)


def test_a_feed_waits_out_a_short_outage_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    down = OperationalError("connection refused")
    done = {"id": 7, "type": "transition", "status": "completed"}
    monkeypatch.setattr(streams, "_events_after", polls(down, down, ([done], "completed"), ([], "completed")))
    assert collect(streams.feed("t", outage=5)) == [done]


def test_a_longer_outage_ends_the_feed_with_the_error_and_heartbeats_go_on_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "_events_after", polls(OperationalError("connection refused")))
    seen: list[dict[str, Any]] = []

    async def run() -> None:
        async for event in streams.feed("t", heartbeat=0.02, outage=0.2):
            seen.append(event)

    with pytest.raises(OperationalError):
        asyncio.run(run())
    assert seen and all(event == {"type": "heartbeat"} for event in seen)
