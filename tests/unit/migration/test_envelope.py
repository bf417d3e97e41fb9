"""Reading stored messages: what kombu can take is read, anything else is named and refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kombu import Connection

from migration import envelope


def stored(**changes: Any) -> str:
    """A task message as the PostgreSQL queue and the Kafka topic store it, with ``changes``."""
    message: dict[str, Any] = {
        "body": base64.b64encode(b'[[], {}, {"callbacks": null}]').decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"id": "6d1c2c9e-5d7e-4a36-9a58-0c1f4f0f7f51", "task": "helixagent.run_task"},
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": "helixagent.tasks", "routing_key": "helixagent.tasks.background"},
            "priority": 0,
        },
    }
    message.update(changes)
    return json.dumps(message)


def test_what_it_reads_kombu_turns_into_a_message() -> None:
    channel = Connection("memory://").channel()
    for raw in (stored(), stored(body=None), stored(headers=None), stored(properties={})):
        message = envelope.read(raw)
        message["properties"]["delivery_tag"] = "1.1"
        assert channel.Message(message, channel=channel).headers == message["headers"]
    assert envelope.read(stored().encode())["headers"]["task"] == "helixagent.run_task"  # Kafka hands bytes


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[" * 100_000, "not JSON"),
        ("123", "a JSON int, not an object"),
        ('{"body": "x"}', "no 'properties' object"),
        (stored(properties=[]), "no 'properties' object"),
        (stored(headers=["id"]), "'headers' is not an object"),
        (stored(properties={"delivery_info": "queue"}), "'delivery_info' is not an object"),
        (stored(**{"content-type": 1}), "'content-type' is not a string"),
        (stored(body=1), "'body' is not a string"),
        (stored(properties={"body_encoding": "rot13"}), "unknown body_encoding 'rot13'"),
        (stored(body="abc"), "'body' is not base64"),
        (stored(body="\ud800"), "'body' is not base64"),
    ],
)
def test_anything_else_is_refused_with_what_is_wrong(raw: str | bytes, problem: str) -> None:
    with pytest.raises(envelope.Unreadable) as refused:
        envelope.read(raw)
    assert str(refused.value).startswith(problem)


def test_a_sample_is_printable_and_short() -> None:
    assert envelope.sample(b"\xff ok") == "\\xff ok"
    assert envelope.sample("x" * 1000) == "x" * envelope.SAMPLE_CHARS + "…"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3ddf8362-3822-4259-88be-b8d48c7a1dea", True), ("3DDF83623822425988BEB8D48C7A1DEA", True)]
    + [(value, False) for value in ("job-7", "", None, 12, ["3ddf8362-3822-4259-88be-b8d48c7a1dea"])],
)
def test_only_a_uuid_is_a_task_id(value: object, expected: bool) -> None:
    found = envelope.task_id(value)
    assert (found is not None) is expected
    if found is not None:
        assert str(found) == "3ddf8362-3822-4259-88be-b8d48c7a1dea"
