"""When a prefork pool counts as stalled (:mod:`tasks.pool_stall`)."""

from __future__ import annotations

from tasks.pool_stall import StallWatch


def test_a_job_no_process_takes_while_one_is_free_stalls_the_pool_after_the_timeout() -> None:
    watch = StallWatch(timeout=60)
    assert not watch.stalled([(1, False)], processes=2, now=0)
    assert not watch.stalled([(1, False)], processes=2, now=59)
    assert watch.stalled([(1, False)], processes=2, now=60)


def test_a_job_taken_in_time_does_not() -> None:
    watch = StallWatch(timeout=60)
    assert not watch.stalled([(1, False)], processes=2, now=0)
    assert not watch.stalled([(1, True), (2, False)], processes=2, now=50)
    assert not watch.stalled([(2, False)], processes=2, now=100)  # job 2 first waited at 50
    assert watch.stalled([(2, False)], processes=2, now=110)


def test_jobs_waiting_while_every_process_is_busy_are_a_backlog_not_a_stall() -> None:
    watch = StallWatch(timeout=60)
    busy = [(1, True), (2, True), (3, False)]
    assert not watch.stalled(busy, processes=2, now=0)
    assert not watch.stalled(busy, processes=2, now=300)
    assert not watch.stalled([(2, True), (3, False)], processes=2, now=359)  # job 3 counts from 300
    assert watch.stalled([(2, True), (3, False)], processes=2, now=360)
