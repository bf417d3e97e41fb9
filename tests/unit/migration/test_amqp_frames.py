"""Publish frames encoded in one go are byte for byte what py-amqp writes for the same message."""

from __future__ import annotations

from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from migration.legs.amqp_frames import publish_frames

FRAME_MAX = 4096


def py_amqp_frames(
    body: bytes, properties: dict[str, Any], exchange: str, routing_key: str, mandatory: bool = False
) -> bytes:
    """What py-amqp's frame writer sends for ``basic_publish`` on channel 3."""
    written: list[bytes] = []

    class Connection:
        frame_max = FRAME_MAX
        bytes_sent = 0

    class Transport:
        def write(self, data: Any) -> None:
            written.append(bytes(data))

    write = frame_writer(Connection(), Transport())
    args = dumps("Bssbb", (0, exchange, routing_key, mandatory, False))
    write(1, 3, spec.Basic.Publish, args, amqp.Message(body, **properties))
    return b"".join(written)


CELERY_LIKE = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "application_headers": {
        "lang": "py",
        "task": "helixagent.run_task",
        "id": "3ddf8362-3822-4259-88be-b8d48c7a1dea",
        "argsrepr": "['3ddf8362-3822-4259-88be-b8d48c7a1dea']",
        "ignore_result": True,
        "retries": 3,
        "timelimit": [None, 30],
        "stamps": {"nested": {"n": -5, "big": 2**40, "f": 1.5}},
        "ünïcode": "välue ✓",
    },
    "delivery_mode": 2,
    "priority": 0,
    "correlation_id": "3ddf8362-3822-4259-88be-b8d48c7a1dea",
    "reply_to": None,
    "message_id": "3ddf8362-3822-4259-88be-b8d48c7a1dea",
}


@pytest.mark.parametrize(
    "body, properties",
    [
        (b'[["a"], {}, {}]', CELERY_LIKE),
        (b"", {"delivery_mode": 2}),
        (b"x" * (3 * FRAME_MAX + 17), CELERY_LIKE),  # body split over several frames
        (b"{}", {**CELERY_LIKE, "application_headers": {}, "priority": 9, "reply_to": "q"}),
    ],
    ids=["celery-message", "bare", "body-over-frame-max", "empty-table"],
)
def test_publish_frames_match_py_amqp(body: bytes, properties: dict[str, Any]) -> None:
    ours = publish_frames(3, FRAME_MAX, "helixagent.tasks", "helixagent.tasks.llm", body, properties)
    assert ours == py_amqp_frames(body, properties, "helixagent.tasks", "helixagent.tasks.llm")


def test_a_mandatory_publish_sets_the_bit_py_amqp_sets() -> None:
    ours = publish_frames(3, FRAME_MAX, "helixagent.tasks", "helixagent.tasks.llm", b"{}", CELERY_LIKE, mandatory=True)
    assert ours == py_amqp_frames(b"{}", CELERY_LIKE, "helixagent.tasks", "helixagent.tasks.llm", mandatory=True)
    assert ours != publish_frames(3, FRAME_MAX, "helixagent.tasks", "helixagent.tasks.llm", b"{}", CELERY_LIKE)


def test_a_header_value_without_an_amqp_type_is_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        publish_frames(1, FRAME_MAX, "", "q", b"", {"application_headers": {"x": object()}})


def test_a_routing_key_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        publish_frames(1, FRAME_MAX, "", "q" * 256, b"", {})
