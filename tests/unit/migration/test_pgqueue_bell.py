import select
import threading
from collections.abc import Iterator

import pytest

from migration.pgqueue.bell import Bell, ring_all


@pytest.fixture
def bell() -> Iterator[Bell]:
    bell = Bell()
    yield bell
    bell.close()


def rung(bell: Bell, wait: float = 0.0) -> bool:
    return bool(select.select([bell.fileno()], [], [], wait)[0])


def test_an_unarmed_bell_stays_silent(bell: Bell) -> None:
    bell.ring()
    assert not rung(bell)


def test_an_armed_bell_rings_once_and_disarms(bell: Bell) -> None:
    bell.armed = True
    bell.ring()
    assert rung(bell) and not bell.armed
    bell.clear()
    bell.ring()
    assert not rung(bell)


def test_a_ring_from_another_thread_ends_a_wait(bell: Bell) -> None:
    bell.armed = True
    ringer = threading.Timer(0.05, bell.ring)
    ringer.start()
    assert rung(bell, wait=10.0)
    ringer.join()


def test_clearing_takes_every_ring_and_disarms(bell: Bell) -> None:
    for _ in range(3):
        bell.armed = True
        bell.ring()
    bell.armed = True
    bell.clear()
    assert not rung(bell) and not bell.armed


def test_a_closed_bell_ignores_a_late_ring() -> None:
    bell = Bell()
    bell.armed = True
    bell.close()
    bell.ring()  # a pool thread settling a message after the connection closed


def test_ring_all_rings_every_bell_armed_or_not(bell: Bell) -> None:
    other = Bell()
    other.armed = True
    ring_all()
    assert rung(bell) and rung(other)
    other.close()
