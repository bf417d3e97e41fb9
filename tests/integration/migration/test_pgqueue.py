"""The PostgreSQL queue transport against a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from bench.common import wal_flushes
from migration.pgqueue import transport
from migration.pgqueue.store import PostgresStore, open_waiter

QUEUE = "helixagent.tasks.background"


@pytest.fixture
def store(live_db_url: str) -> Any:
    store = PostgresStore(live_db_url)
    yield store
    store.close()


def kombu_connection(url: str, **options: Any) -> Connection:
    return Connection("pgqueue://localhost//", transport_options={"dsn": url, "polling_interval": 0.2, **options})


def test_each_message_is_claimed_by_exactly_one_of_two_concurrent_consumers(live_db_url: str, store: Any) -> None:
    for n in range(300):
        store.put(QUEUE, 0, f'{{"n": {n}}}', None)
    seen: list[list[int]] = [[], []]

    def consume(slot: int) -> None:
        mine = PostgresStore(live_db_url)
        while rows := mine.claim(QUEUE, 10, 30):
            seen[slot].extend(row[0] for row in rows)
        mine.close()

    threads = [threading.Thread(target=consume, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) == 300


def test_puts_wait_for_the_wal_flush_and_leases_and_acks_do_not(store: Any) -> None:
    before = wal_flushes(store.execute)
    for _ in range(100):
        store.put(QUEUE, 0, "{}", None)
    after_puts = wal_flushes(store.execute)
    for _ in range(100):
        [(row_id, *_)] = store.claim(QUEUE, 1, 30)
        store.ack([row_id])
    after = wal_flushes(store.execute)
    assert after_puts - before >= 100  # an accepted message is on disk when its put returns
    assert after - after_puts < 100  # 200 durable commits would be 200 flushes
    assert store.size(QUEUE) == 0


def test_claims_follow_priority_then_arrival(store: Any) -> None:
    store.put(QUEUE, 1, '"low"', None)
    store.put(QUEUE, 9, '"high"', None)
    store.put(QUEUE, 1, '"low-2"', None)
    assert [row[2] for row in store.claim(QUEUE, 10, 30)] == ['"high"', '"low"', '"low-2"']


def test_an_unacknowledged_message_comes_back_after_the_visibility_timeout(store: Any) -> None:
    store.put(QUEUE, 0, "{}", None)
    [(message_id, _, _, deliveries)] = store.claim(QUEUE, 1, lease=1.0)
    assert deliveries == 1
    assert store.claim(QUEUE, 1, lease=1.0) == []
    time.sleep(1.2)
    [(again, _, _, deliveries)] = store.claim(QUEUE, 1, lease=1.0)
    assert (again, deliveries) == (message_id, 2)


def test_renewing_the_lease_keeps_a_held_message_invisible(store: Any) -> None:
    store.put(QUEUE, 0, "{}", None)
    [(message_id, *_)] = store.claim(QUEUE, 1, lease=1.0)
    for _ in range(3):
        time.sleep(0.5)
        store.extend([message_id], 1.0)
    assert store.claim(QUEUE, 1, lease=1.0) == []


def test_ack_deletes_and_release_requeues(store: Any) -> None:
    store.put(QUEUE, 0, "{}", None)
    store.put(QUEUE, 0, "{}", None)
    first, second = (row[0] for row in store.claim(QUEUE, 2, 30))
    store.ack([first])
    store.release([second])
    assert store.size(QUEUE) == 1
    assert [row[0] for row in store.claim(QUEUE, 2, 30)] == [second]


def test_notify_wakes_an_idle_consumer_long_before_its_poll_interval(live_db_url: str, store: Any) -> None:
    waiter = open_waiter(live_db_url)
    waiter.listen([QUEUE])
    publisher = threading.Timer(0.3, store.put, args=(QUEUE, 0, "{}", None))
    publisher.start()
    started = time.monotonic()
    waiter.wait(timeout=10.0)
    waited = time.monotonic() - started
    publisher.join()  # the store is closed after the test: let the put finish first
    waiter.close()
    assert waited < 5.0, f"woke after {waited:.2f}s: the NOTIFY did not arrive"


def test_an_ack_from_another_thread_frees_a_full_window_before_the_poll(live_db_url: str, store: Any) -> None:
    # the threads pool acknowledges in the thread that ran the task, while the consuming thread
    # waits because its prefetch window is full; no NOTIFY comes for messages queued long ago
    with kombu_connection(live_db_url, polling_interval=30.0) as conn:
        queue = conn.SimpleQueue("probe.window")
        queue.consumer.qos(prefetch_count=1)
        queue.put({"n": 1})
        queue.put({"n": 2})
        first = queue.get(timeout=5)
        acker = threading.Timer(0.3, first.ack)
        acker.start()
        started = time.monotonic()
        second = queue.get(timeout=10)
        waited = time.monotonic() - started
        acker.join()
        assert second.payload == {"n": 2}
        assert waited < 5.0, f"delivered after {waited:.2f}s: the ack did not wake the consumer"
        second.ack()
        queue.close()


def test_messages_past_their_ttl_are_neither_claimed_nor_kept(store: Any) -> None:
    store.put(QUEUE, 0, "{}", ttl=0.2)
    time.sleep(0.3)
    assert store.claim(QUEUE, 1, 30) == []
    store.sweep(grace=60)
    assert store.execute("SELECT count(*) FROM helix_queue_message")[0][0] == 0


def test_kombu_round_trip_acks_by_deleting_the_row(live_db_url: str, store: Any) -> None:
    with kombu_connection(live_db_url) as conn:
        queue = conn.SimpleQueue("probe.roundtrip")
        queue.put({"hello": "world"})
        message = queue.get(timeout=5)
        assert message.payload == {"hello": "world"}
        assert store.size("probe.roundtrip") == 1  # still held until acknowledged
        message.ack()
        assert queue.qsize() == 0
        assert store.size("probe.roundtrip") == 0
        queue.close()


def test_a_row_kombu_cannot_read_is_logged_and_deleted_and_the_next_is_delivered(
    live_db_url: str, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with kombu_connection(live_db_url) as conn:
        queue = conn.SimpleQueue("probe.unreadable")
        store.put("probe.unreadable", 0, "not json", None)
        store.put("probe.unreadable", 0, '{"body": "x"}', None)
        queue.put({"n": 1})
        with caplog.at_level("ERROR", logger="helixagent.pgqueue"):
            message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
    reported = [record for record in caplog.records if record.getMessage() == "pgqueue.unreadable_message"]
    assert [(r.sample, r.problem.split(" (")[0]) for r in reported] == [  # type: ignore[attr-defined]
        ("not json", "not JSON"),
        ('{"body": "x"}', "no 'properties' object"),
    ]
    assert store.size("probe.unreadable") == 0


def test_a_consumer_that_closes_without_ack_returns_its_message(live_db_url: str, store: Any) -> None:
    with kombu_connection(live_db_url) as conn:
        queue = conn.SimpleQueue("probe.restore")
        queue.put({"n": 1})
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()
    with kombu_connection(live_db_url) as conn:
        queue = conn.SimpleQueue("probe.restore")
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1} and message.delivery_info is not None
        message.ack()
        queue.close()


def test_a_stopping_consumer_returns_at_once_and_leaves_the_waiting_message(
    live_db_url: str, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "stopping", threading.Event())
    with kombu_connection(live_db_url, polling_interval=1.0) as conn:
        queue = conn.SimpleQueue("probe.stopping")
        queue.put({"n": 1})
        transport.stopping.set()
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            queue.get(timeout=10)
        assert time.monotonic() - started < 1.0  # not after an idle poll, let alone the timeout
        assert store.size("probe.stopping") == 1
        transport.stopping.clear()
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()


def test_stopping_wakes_a_consumer_waiting_for_work(live_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a worker's shutdown comes while its consuming loop waits on an empty queue
    monkeypatch.setattr(transport, "stopping", threading.Event())
    with kombu_connection(live_db_url, polling_interval=30.0) as conn:
        queue = conn.SimpleQueue("probe.stop.idle")
        stopper = threading.Timer(0.3, transport.stop_consuming)
        stopper.start()
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            queue.get(timeout=20)
        waited = time.monotonic() - started
        stopper.join()
        assert waited < 5.0, f"returned after {waited:.2f}s: the stop did not wake the consumer"
        queue.close()


def test_fanout_reaches_queues_bound_by_other_connections(live_db_url: str) -> None:
    exchange = Exchange("probe.fanout", type="fanout")
    received: dict[str, Any] = {}
    consumers = []
    for name in ("probe.fan.a", "probe.fan.b"):
        conn = kombu_connection(live_db_url)
        bound = Queue(name, exchange)(conn.default_channel)
        bound.declare()
        consumers.append((name, conn, bound))
    time.sleep(2.1)  # publishers re-read shared bindings every 2 s
    with kombu_connection(live_db_url) as publisher:
        publisher.Producer().publish({"hello": "all"}, exchange=exchange, declare=[exchange])
    for name, conn, bound in consumers:
        message = bound.get(no_ack=True)
        received[name] = message.payload if message else None
        conn.close()
    assert received == {"probe.fan.a": {"hello": "all"}, "probe.fan.b": {"hello": "all"}}


def test_a_message_settled_after_its_connection_closed_is_delivered_again(live_db_url: str, store: Any) -> None:
    # a pool thread ends its task after the worker lost its connection, and acknowledges
    conn = kombu_connection(live_db_url)
    queue = conn.SimpleQueue("probe.late")
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    conn.close()
    message.ack()
    assert store.size("probe.late") == 1  # the closing connection handed the message back
