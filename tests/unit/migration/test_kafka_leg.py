"""When the Kafka leg gives up on a consumer that stays outside its group, without a broker."""

from __future__ import annotations

from migration.legs.kafka import MembershipWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_member_is_never_stalled() -> None:
    clock = Clock()
    watch = MembershipWatch(60, clock)
    for _ in range(3):
        assert not watch.stalled("rdkafka-1")
        clock.now += 100


def test_a_consumer_outside_its_group_is_stalled_after_the_timeout_only() -> None:
    clock = Clock()
    watch = MembershipWatch(60, clock)
    assert not watch.stalled(None)  # the session just ended: counted from here
    clock.now += 59.9
    assert not watch.stalled("")
    clock.now += 0.1
    assert watch.stalled(None)


def test_joining_again_restarts_the_count() -> None:
    clock = Clock()
    watch = MembershipWatch(60, clock)
    watch.stalled(None)
    clock.now += 50
    assert not watch.stalled("rdkafka-2")
    clock.now += 50
    assert not watch.stalled(None)
    clock.now += 59
    assert not watch.stalled(None)
    watch.reset()  # a new consumer: its first join counts from its first wait
    clock.now += 30
    assert not watch.stalled(None)
