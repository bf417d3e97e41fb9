"""Reading a stored message: the JSON form of kombu's virtual transport (``body``, ``headers``,
``properties``), as the PostgreSQL queue rows and the Kafka work topic hold it.

Anything can land on those: another producer, a hand-made test message, a record cut short.
kombu and Celery read the form without checking it, and an error there stops the worker's
consumer for good (Celery calls it unrecoverable); the worker restarts, reads the same message
and stops again. So a consumer reads each message through :func:`read` and passes over one it
cannot use, logging what it was. A message in the right form whose *body* is not a task is
Celery's to judge: it logs an undecodable body or an unknown task, and the worker rejects both
(dead-lettered on RabbitMQ). :func:`task_id` tells a task id from anything else a message names.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

#: characters of an unreadable message kept in the line that reports it.
SAMPLE_CHARS = 300


class Unreadable(ValueError):
    """A stored message that is not in the virtual-transport form; the text says what is wrong."""


def read(raw: bytes | str) -> dict[str, Any]:
    """The message stored as ``raw`` (its ``headers`` a dict, if empty); raises
    :class:`Unreadable` unless kombu can take it."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise Unreadable(f"not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise Unreadable(f"a JSON {type(message).__name__}, not an object")
    properties = message.get("properties")
    if not isinstance(properties, dict):
        raise Unreadable("no 'properties' object")
    for holder, key in ((message, "headers"), (properties, "delivery_info")):
        if not isinstance(holder.get(key) or {}, dict):
            raise Unreadable(f"'{key}' is not an object")
    message["headers"] = message.get("headers") or {}  # the router adds to them
    for key in ("content-type", "content-encoding"):
        if not isinstance(message.get(key) or "", str):
            raise Unreadable(f"'{key}' is not a string")
    body, encoding = message.get("body"), properties.get("body_encoding")
    if not isinstance(body or "", str):
        raise Unreadable("'body' is not a string")
    if encoding not in (None, "base64"):
        raise Unreadable(f"unknown body_encoding {encoding!r}")
    if encoding and body:
        try:
            base64.b64decode(body.encode())  # as kombu decodes it
        except (binascii.Error, ValueError):
            raise Unreadable("'body' is not base64") from None
    return message


def sample(raw: bytes | str) -> str:
    """The start of an unreadable message, printable, for the line that reports it."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    return text[:SAMPLE_CHARS] + ("…" if len(text) > SAMPLE_CHARS else "")


def task_id(value: Any) -> uuid.UUID | None:
    """The task id ``value`` names (a UUID, in any of its spellings), or None when it names none:
    another producer's message, which no task row can match and no query may be given."""
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
