"""The ``Last-Event-ID`` a client sends back to resume an event stream (:mod:`tasks.api.streams`)."""

from __future__ import annotations

import pytest

from tasks.api.streams import event_id


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("42", 42), (str(2**63 - 1), 2**63 - 1)])
def test_an_event_id_is_read(raw: str, expected: int) -> None:
    assert event_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "-1", "1.5", "²", "١٢", str(2**63), "9" * 30, "9" * 5000])
def test_anything_else_is_refused(raw: str) -> None:
    # "²" and 5,000 digits passed str.isdigit and then made int() raise (a 500)
    assert event_id(raw) is None
