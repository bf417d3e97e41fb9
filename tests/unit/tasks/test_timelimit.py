"""The time limits the runner enforces itself (:mod:`tasks.timelimit`): the soft one on the threads and
solo pools, the hard one in prefork pool processes."""

from __future__ import annotations

import threading
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tasks.timelimit import HardLimit, SoftLimit


def test_a_block_still_running_at_the_limit_is_interrupted() -> None:
    started = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded), SoftLimit(0.2):
        for _ in range(100):
            time.sleep(0.05)
    assert time.monotonic() - started < 1.0


def test_it_is_raised_in_the_thread_that_entered_the_block_only() -> None:
    seen: list[str] = []

    def handler() -> None:
        try:
            with SoftLimit(0.2):
                time.sleep(2)
        except SoftTimeLimitExceeded:
            seen.append("interrupted")

    thread = threading.Thread(target=handler)
    thread.start()
    thread.join(5)
    assert seen == ["interrupted"]


def test_nothing_is_raised_after_the_block_has_ended() -> None:
    for n in range(100):  # around the limit, where the timer and the end of the block race
        try:
            with SoftLimit(0.01):
                time.sleep(0.01 if n % 2 else 0.0)
        except SoftTimeLimitExceeded:
            pass  # raised while the block ran, or as it ended: both are in time
        time.sleep(0.002)  # a late exception would be raised here, outside the try
    time.sleep(0.05)


def test_a_hard_limit_ends_a_block_still_running_and_the_block_waits_for_the_end() -> None:
    ended: list[float] = []

    def end() -> None:  # in a worker, this ends the process
        time.sleep(0.3)
        ended.append(time.monotonic())

    with HardLimit(0.1, end):
        time.sleep(0.15)
    left = time.monotonic()
    assert len(ended) == 1 and left >= ended[0], "the block was left while the process was being ended"


def test_a_hard_limit_does_nothing_once_the_block_has_ended() -> None:
    ended: list[str] = []
    with HardLimit(0.1, lambda: ended.append("ended")):
        pass
    time.sleep(0.2)
    assert ended == []
