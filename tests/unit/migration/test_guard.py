"""The automatic-rollback rule, without services."""

from __future__ import annotations

from migration.guard import Window, breach


def test_no_rollback_below_min_samples_even_if_every_task_failed() -> None:
    assert breach(Window(finished=9, errors=9, p99_wait_ms=60_000), 5, 1000, min_samples=10) is None


def test_errors_per_minute_at_the_threshold_trigger_a_rollback() -> None:
    reason = breach(Window(finished=100, errors=50, p99_wait_ms=10), 50, 5000, 20)
    assert reason is not None and "50 failed executions" in reason
    assert breach(Window(finished=100, errors=49, p99_wait_ms=10), 50, 5000, 20) is None


def test_p99_queue_wait_at_the_threshold_triggers_a_rollback() -> None:
    reason = breach(Window(finished=100, errors=0, p99_wait_ms=5000), 50, 5000, 20)
    assert reason is not None and "p99 queue wait" in reason
    assert breach(Window(finished=100, errors=0, p99_wait_ms=None), 50, 5000, 20) is None
