"""Event streams without services (:mod:`tasks.api.streams`): the ``Last-Event-ID`` a client sends
back to resume, and how SSE and WebSocket end when the database stays away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.db import OperationalError

from tasks.api import streams
from tasks.api.streams import event_id


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("42", 42), (str(2**63 - 1), 2**63 - 1)])
def test_an_event_id_is_read(raw: str, expected: int) -> None:
    assert event_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "-1", "1.5", "²", "١٢", str(2**63), "9" * 30, "9" * 5000])
def test_anything_else_is_refused(raw: str) -> None:
    # "²" and 5,000 digits passed str.isdigit and then made int() raise (a 500)
    assert event_id(raw) is None


def failing_feed(*args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
    async def events() -> AsyncIterator[dict[str, Any]]:
        yield {"id": 1, "type": "transition", "status": "running"}
        raise OperationalError("connection refused")

    return events()


def test_a_stream_whose_database_stays_away_ends_with_an_error_event_and_a_retry_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "feed", failing_feed)

    async def read() -> list[str]:
        return [chunk async for chunk in streams._sse("t", 0)]

    first, last = asyncio.run(read())
    assert first.startswith("id: 1\nevent: transition\n")
    head, _, data = last.partition("data: ")
    assert head == "retry: 5000\nevent: error\n"
    assert json.loads(data)["error"]["code"] == "service_unavailable"


def test_a_websocket_whose_database_stays_away_gets_an_error_and_closes_with_1013(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "feed", failing_feed)
    consumer = streams.TaskEventsConsumer()
    consumer.task_id = "t"
    sent: list[Any] = []

    async def send_json(content: Any, close: bool = False) -> None:
        sent.append(content)

    async def close(code: int | None = None, reason: str | None = None) -> None:
        sent.append(("close", code))

    monkeypatch.setattr(consumer, "send_json", send_json)
    monkeypatch.setattr(consumer, "close", close)
    asyncio.run(consumer._pump())
    assert sent[0]["status"] == "running"
    assert sent[1]["type"] == "error" and sent[1]["error"]["code"] == "service_unavailable"
    assert sent[2] == ("close", 1013)
