"""The outbox publisher on a real PostgreSQL and RabbitMQ: when copies leave, together with which,
and that a publisher thread that died is replaced."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from migration import outbox, router
from tasks import service
from tests.conftest import ModeSetting, purge_rabbitmq, rabbitmq_depth, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
#: long enough that no scheduling delay of a busy machine passes for it
INTERVAL = 0.5


@pytest.fixture
def batches(
    monkeypatch: pytest.MonkeyPatch, switch_mode: Callable[[ModeSetting], None]
) -> Iterator[list[tuple[float, float, int]]]:
    """``(started, finished, copies)`` of every batch the publisher sends, in messaging mode on RabbitMQ,
    with the batch interval at :data:`INTERVAL`."""
    purge_rabbitmq()
    switch_mode(ModeSetting("messaging", broker="rabbitmq"))
    sent: list[tuple[float, float, int]] = []
    publish = router.Channel.publish_batch

    def recorded(self: router.Channel, name: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        started = time.monotonic()
        publish(self, name, items)
        sent.append((started, time.monotonic(), len(items)))

    assert outbox.publisher.flush(30)
    monkeypatch.setattr(router.Channel, "publish_batch", recorded)
    monkeypatch.setattr(outbox, "BATCH_INTERVAL", INTERVAL)
    time.sleep(INTERVAL)  # whatever the publisher sent last is more than an interval ago
    yield sent
    assert outbox.publisher.flush(30)
    purge_rabbitmq()


def test_a_copy_that_finds_the_publisher_idle_leaves_at_once_and_a_stream_behind_it_leaves_together(
    batches: list[tuple[float, float, int]],
) -> None:
    submitted = time.monotonic()
    for _ in range(11):
        service.submit({"task_type": "noop"})
    assert outbox.publisher.flush(30)

    assert sum(copies for _started, _finished, copies in batches) == 11
    (first_started, first_finished, _copies), *rest = batches
    assert first_started - submitted < INTERVAL / 2, "the first copy waited for an interval"
    assert len(rest) == 1, f"the copies behind the first left in {len(rest)} batches, not one"
    assert rest[0][0] - first_finished >= INTERVAL * 0.99


def test_a_publisher_thread_that_died_is_replaced_by_the_next_copy(
    monkeypatch: pytest.MonkeyPatch, switch_mode: Callable[[ModeSetting], None]
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("messaging", broker="rabbitmq"))
    assert outbox.publisher.flush(30)

    def unexpected(published: list[int]) -> list[int]:
        raise RuntimeError("an error nobody planned for")

    with monkeypatch.context() as patched:
        patched.setattr(outbox.Publisher, "_forget", staticmethod(unexpected))
        service.submit({"task_type": "noop"})
        dead = outbox.publisher.thread
        assert dead is not None
        wait_for(lambda: not dead.is_alive(), 10, 0.05, what="the publisher thread to die")
    service.submit({"task_type": "noop"})
    assert outbox.publisher.flush(10), "the copy waited on a dead thread"
    assert outbox.publisher.thread is not dead and outbox.publisher.thread.is_alive()
    assert rabbitmq_depth() == 2
    purge_rabbitmq()
