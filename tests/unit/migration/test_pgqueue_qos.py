from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from migration.pgqueue import transport
from migration.pgqueue.transport import QoS


@pytest.fixture
def pool() -> Iterator[dict[str, bool]]:
    room = {"free": True}
    transport.deliver_while(lambda: room["free"])
    yield room
    transport.deliver_while(None)


def test_a_task_channel_delivers_only_while_the_pool_has_a_free_process(pool: dict[str, bool]) -> None:
    tasks = QoS(SimpleNamespace(do_restore=False), prefetch_count=8)
    assert tasks.can_consume()
    pool["free"] = False
    assert not tasks.can_consume()


def test_remote_control_and_events_are_delivered_whatever_the_pool(pool: dict[str, bool]) -> None:
    pool["free"] = False
    assert QoS(
        SimpleNamespace(do_restore=False), prefetch_count=0
    ).can_consume()  # no prefetch window: not Celery's task consumer


def test_a_full_prefetch_window_delivers_nothing_whatever_the_pool(pool: dict[str, bool]) -> None:
    tasks = QoS(SimpleNamespace(do_restore=False), prefetch_count=1)
    tasks.append(SimpleNamespace(), "1.1")
    assert not tasks.can_consume()
