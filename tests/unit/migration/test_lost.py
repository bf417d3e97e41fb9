"""When a queue counts as seen empty before a look."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from migration.lost import Sightings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_look_returns_the_time_of_the_previous_look_only_if_that_one_found_the_queue_empty() -> None:
    seen = Sightings()
    assert seen.look("rabbitmq", "q", 0, at(0)) is None  # nothing was seen before
    assert seen.look("rabbitmq", "q", 5, at(30)) == at(0)  # busy now, but empty at 0
    assert seen.look("rabbitmq", "q", 0, at(60)) is None  # busy at 30
    assert seen.look("rabbitmq", "q", 0, at(90)) == at(60)
    assert seen.look("rabbitmq", "other", 0, at(90)) is None  # queues are apart


def test_a_broker_forgotten_starts_over() -> None:
    seen = Sightings()
    seen.look("kafka", "*", 0, at(0))
    seen.look("rabbitmq", "q", 0, at(0))
    seen.forget("kafka")
    assert seen.look("kafka", "*", 0, at(30)) is None
    assert seen.look("rabbitmq", "q", 0, at(30)) == at(0)
