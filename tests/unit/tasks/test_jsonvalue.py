"""What :mod:`tasks.jsonvalue` refuses: only what PostgreSQL's ``jsonb`` would."""

from __future__ import annotations

from typing import Any

import pytest

from tasks import jsonvalue


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"tags": {"a"}}, "not JSON serializable"),
        ({"score": float("nan")}, "Out of range float values"),
        ({"score": float("inf")}, "Out of range float values"),
        ({"text": "a\x00b"}, "NUL character"),
        ({"a\x00": 1}, "NUL character"),
        (["x\\\x00"], "NUL character"),  # a backslash, then a NUL
        ({"text": "\ud800"}, "lone surrogate"),
        ({"deep": nested(100_000)}, "not JSON"),  # a handler's result deeper than the encoder goes
    ],
)
def test_what_the_database_would_refuse_is_refused_saying_why(value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        jsonvalue.encode(value)


@pytest.mark.parametrize("value", [None, {"path": "C:\\u0000"}, {"path": "\\\\u0000"}, {"n": 1.5, "s": "é"}])
def test_text_that_only_looks_like_a_nul_escape_is_kept(value: Any) -> None:
    assert jsonvalue.encode(value)
