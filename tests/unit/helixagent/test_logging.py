"""The JSON log lines, the filter that holds back repeated lines, and the outage log."""

from __future__ import annotations

import json
import logging

import pytest

from helixagent.logging import JsonFormatter, Outage, RepeatFilter

REFUSED = "FAIL [rdkafka#consumer-{n}] 127.0.0.1:9092/bootstrap: Connection refused (after {ms}ms in state CONNECT)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("helixagent.migration.kafka.client", level, __file__, 1, message, None, None)


def test_like_lines_pass_once_per_window_and_say_how_many_were_held_back() -> None:
    clock = Clock()
    repeats = RepeatFilter(window=30.0, clock=clock)
    passed = []
    for second in range(61):  # one refused connection a second, client numbers and times varying
        clock.now = 1000.0 + second
        line = record(REFUSED.format(n=second % 3, ms=second))
        if repeats.filter(line):
            passed.append((second, getattr(line, "repeated", 0)))
    assert passed == [(0, 0), (30, 29), (60, 29)]


def test_different_lines_and_levels_pass_on_their_own() -> None:
    repeats = RepeatFilter(window=30.0, clock=Clock())
    assert repeats.filter(record(REFUSED.format(n=1, ms=0)))
    assert repeats.filter(record("GroupCoordinator: Disconnected"))
    assert repeats.filter(record(REFUSED.format(n=1, ms=0), level=logging.INFO))
    assert not repeats.filter(record(REFUSED.format(n=2, ms=5)))


def test_the_oldest_kinds_are_forgotten_beyond_the_limit() -> None:
    repeats = RepeatFilter(window=30.0, clock=Clock())
    for n in range(RepeatFilter.KINDS + 1):
        assert repeats.filter(record(f"line {'x' * n}"))
    assert repeats.filter(record("line "))  # the first kind was forgotten, so it passes again
    assert not repeats.filter(record(f"line {'x' * RepeatFilter.KINDS}"))


def test_the_count_of_held_back_lines_is_a_key_of_the_json_line() -> None:
    clock = Clock()
    repeats = RepeatFilter(window=30.0, clock=clock)
    repeats.filter(record("refused"))
    repeats.filter(record("refused"))
    clock.now += 31
    line = record("refused")
    assert repeats.filter(line)
    assert json.loads(JsonFormatter().format(line))["repeated"] == 1


def test_an_outage_is_logged_when_it_begins_and_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = Outage(logging.getLogger("helixagent.test"), "probe.database", clock=clock)
    with caplog.at_level(logging.INFO, logger="helixagent.test"):
        outage.answered()
        for _ in range(5):
            outage.failed(ConnectionRefusedError("refused"), step="sweep")
            clock.now += 2
        outage.answered()
        outage.answered()
    lines = [
        (r.getMessage(), vars(r).get("error"), vars(r).get("after_seconds"), vars(r).get("failures"))
        for r in caplog.records
    ]
    assert lines == [("probe.database_unavailable", "refused", None, None), ("probe.database_back", None, 10.0, 5)]
