import uuid
from datetime import UTC, datetime, timedelta

from tasks.stuck import Stale, StaleWatch

BEAT = datetime(2026, 1, 1, tzinfo=UTC)


def stale() -> Stale:
    return Stale(uuid.uuid4(), uuid.uuid4(), BEAT)


def test_an_execution_is_confirmed_once_found_unchanged_after_the_delay() -> None:
    watch, found = StaleWatch(), stale()
    assert watch.confirmed([found], now=100.0, confirm_after=2.0) == []
    assert watch.confirmed([found], now=101.0, confirm_after=2.0) == []
    assert watch.confirmed([found], now=102.0, confirm_after=2.0) == [found]


def test_a_heartbeat_that_moved_starts_the_wait_over() -> None:
    watch, found = StaleWatch(), stale()
    watch.confirmed([found], now=100.0, confirm_after=2.0)
    moved = found._replace(heartbeat_at=BEAT + timedelta(seconds=1))
    assert watch.confirmed([moved], now=103.0, confirm_after=2.0) == []
    assert watch.confirmed([moved], now=105.0, confirm_after=2.0) == [moved]


def test_an_execution_missing_from_one_sweep_is_forgotten() -> None:
    watch, found, other = StaleWatch(), stale(), stale()
    watch.confirmed([found], now=100.0, confirm_after=2.0)
    watch.confirmed([other], now=101.0, confirm_after=2.0)
    assert watch.confirmed([found, other], now=103.0, confirm_after=2.0) == [other]
