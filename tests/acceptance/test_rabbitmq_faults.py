"""RabbitMQ restarts under load: the worker's consumer and the submitting process reconnect by
themselves, the messages the worker held unacknowledged come back (the claim skips those already
run), and every task completes once. In dual_write the verifier finds nothing amiss. A memory
alarm that blocks publishers sends new copies to PostgreSQL until it clears, and so does a hung
broker. A deleted task queue is declared again, and no publish is lost meanwhile; the tasks whose
copies a purge dropped run from PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kombu import Connection

from migration import migrate_pending
from migration.models import Discrepancy
from migration.router import LEG_RETRY
from tasks import service
from tasks.models import Task
from tests.conftest import (
    ModeSetting,
    pg_depth,
    purge_rabbitmq,
    rabbitmq_depth,
    rabbitmq_frozen,
    require_env,
    start_rabbitmq,
    stop_rabbitmq,
    wait_for,
)
from tests.helpers import completed_once, run_from, submit, submit_many, wait_completed

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rabbitmq_restart_under_load_loses_nothing(api: Any, start_worker: Any, switch_mode: Any) -> None:
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.2}) for _ in range(300)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    stop_rabbitmq()
    assert Task.objects.filter(pk__in=first, status="completed").count() < len(first), "no load left at the stop"
    time.sleep(2)  # long enough for the worker to notice its connection is gone
    start_rabbitmq()
    later = [submit(api, "noop") for _ in range(50)]
    wait_completed(first + later, timeout=120)
    completed_once(first + later)
    # Published after the restart, run from RabbitMQ: both ends are connected to it again.
    assert run_from(later) == {"rabbitmq"}


def test_a_rabbitmq_restart_in_dual_write_loses_no_copy_and_logs_no_discrepancy(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    setting = ModeSetting("dual_write", 50)
    purge_rabbitmq()
    switch_mode(setting)
    # The timeout must outlast the backlog (about 8 s of work, and RabbitMQ away for up to 10 s),
    # or copies still waiting count as lost.
    start_worker("w1", DUAL_WRITE_TIMEOUT="25", **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.2}) for _ in range(150)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    stop_rabbitmq()
    assert Task.objects.filter(pk__in=first, status="completed").count() < len(first), "no load left at the stop"
    during = [submit(api, "noop") for _ in range(20)]  # their RabbitMQ copies fall back to PostgreSQL
    start_rabbitmq()
    later = [submit(api, "noop") for _ in range(50)]
    ids = first + during + later
    wait_completed(ids, timeout=120)
    completed_once(ids)
    dual = Task.objects.filter(pk__in=ids, published_to__contains="+")
    wait_for(lambda: not dual.filter(verified_at__isnull=True).exists(), 60, 0.5, what="every dual task verified")
    assert list(Discrepancy.objects.values_list("kind", "task_id", "leg")) == []
    assert pg_depth() == 0 and rabbitmq_depth() == 0


@contextmanager
def rabbitmq_memory_alarm() -> Iterator[None]:
    """RabbitMQ's memory alarm raised: it stops reading from every connection that publishes
    (``connection.blocked``) while consumers go on."""
    read = ["rabbitmqctl", "-q", "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]
    before = subprocess.run(read, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    # a fraction of the memory ("0.4"), or "{absolute,Bytes}"
    restore = ["absolute", before.strip("{}").split(",")[1]] if before.startswith("{absolute") else [before]
    subprocess.run(["rabbitmqctl", "-q", "set_vm_memory_high_watermark", "0"], check=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run(["rabbitmqctl", "-q", "set_vm_memory_high_watermark", *restore], check=True, timeout=60)


def test_tasks_submitted_while_rabbitmq_blocks_publishers_run_from_postgresql_once(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", **setting.env)
    wait_completed([submit(api, "noop")], timeout=30)  # connected before the alarm
    with rabbitmq_memory_alarm():
        during = [submit(api, "noop") for _ in range(20)]
        wait_completed(during, timeout=60)  # the copies fell back instead of waiting out the alarm
    assert run_from(during) == {"postgresql"}
    time.sleep(LEG_RETRY)  # the publisher tries RabbitMQ again after its back-off
    later = [submit(api, "noop") for _ in range(20)]
    wait_completed(later, timeout=60)
    completed_once(during + later)
    assert run_from(later) == {"rabbitmq"}


def test_migrate_pending_while_rabbitmq_blocks_publishers_moves_nothing_and_reruns(switch_mode: Any) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("legacy"))
    ids = submit_many(3000)
    switch_mode(ModeSetting("messaging", broker="rabbitmq"))
    with rabbitmq_memory_alarm():
        blocked = migrate_pending.migrate_pending(batch_size=1000)
    assert blocked.migrated == 0 and blocked.remaining == 3000, blocked
    assert "rabbitmq" in blocked.error
    moved = migrate_pending.migrate_pending(batch_size=1000)
    assert moved.migrated == 3000 and moved.remaining == 0, moved
    # The blocked run's first writes reached the queues before the alarm stopped reading them:
    # those copies are there twice, which the claim on the task row makes harmless.
    assert rabbitmq_depth() >= 3000 and pg_depth() == 0
    assert Task.objects.filter(pk__in=ids, migrated_at__isnull=False).count() == 3000


def test_migrate_pending_after_a_rabbitmq_restart_moves_every_task(switch_mode: Any) -> None:
    """Each run publishes on connections of its own: a run after the broker restarted does not
    pick up a connection the restart dropped."""
    purge_rabbitmq()
    switch_mode(ModeSetting("legacy"))
    ids = submit_many(100)
    switch_mode(ModeSetting("messaging", broker="rabbitmq"))
    assert migrate_pending.migrate_pending().migrated == 100
    stop_rabbitmq()
    start_rabbitmq()
    purge_rabbitmq()
    assert service.reenqueue(ids) == 100  # PostgreSQL copies again, for the second run
    moved = migrate_pending.migrate_pending()
    assert (moved.migrated, moved.failed, moved.remaining) == (100, 0, 0), moved
    assert rabbitmq_depth() == 100 and pg_depth() == 0


def test_tasks_submitted_while_rabbitmq_hangs_run_from_postgresql_once(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    """The submitting process's publisher waits for confirms that do not come; 5 s after the
    submits a worker's outbox relay takes the copies over, cannot connect to the hung broker, and
    publishes PostgreSQL copies instead, which the worker runs."""
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", **setting.env)
    wait_completed([submit(api, "noop")], timeout=30)  # connected before the hang
    with rabbitmq_frozen():
        during = [submit(api, "noop") for _ in range(10)]
        wait_completed(during, timeout=90)
    assert run_from(during) == {"postgresql"}
    completed_once(during)


def test_messages_held_by_a_frozen_worker_run_on_another_worker(api: Any, start_worker: Any, switch_mode: Any) -> None:
    """A worker that stops answering while its connection stays open (SIGSTOP, as a hung node or
    one cut off from the network): RabbitMQ closes that connection after missed heartbeats and
    delivers the messages it held to the other worker."""
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    env = {**setting.env, "RABBITMQ_HEARTBEAT": "2"}
    first = start_worker("w1", concurrency=1, **env)
    ids = [submit(api, "sleep", {"seconds": 0.5}) for _ in range(30)]  # w1 takes them all (prefetch)
    wait_for(lambda: Task.objects.filter(pk__in=ids, status="completed").count() >= 2, 60, what="w1 at work")
    os.killpg(first.process.pid, signal.SIGSTOP)
    try:
        held = list(Task.objects.filter(pk__in=ids, status="queued").values_list("pk", flat=True))
        assert held, "w1 held no message"
        start_worker("w2", concurrency=4, **env)
        wait_completed([str(pk) for pk in held], timeout=60)
        workers = set(Task.objects.filter(pk__in=held).values_list("worker_id", flat=True))
        assert {worker.split("@")[0] for worker in workers} == {"w2"}
    finally:
        first.kill()
    completed_once([str(pk) for pk in held])


def test_tasks_submitted_after_their_queue_was_deleted_all_complete_once(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    """An operator deletes a task queue under a running worker. RabbitMQ would confirm a publish
    that no queue takes and drop it, leaving its task queued for good: the publish is mandatory,
    comes back, and the publisher declares the topology again and publishes once more."""
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", **setting.env)
    wait_completed([submit(api, "noop")], timeout=30)
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        conn.channel().queue_delete("helixagent.tasks.background")
    later = [submit(api, "noop") for _ in range(20)]
    wait_completed(later, timeout=60)
    completed_once(later)


def test_tasks_whose_queue_was_purged_complete_once(api: Any, start_worker: Any, switch_mode: Any) -> None:
    """A purge drops the only copies of ten waiting tasks without a word: the worker finds their
    queue empty while they wait, and gives each a PostgreSQL copy."""
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    waited = [submit(api, "noop") for _ in range(10)]
    wait_for(lambda: rabbitmq_depth() == len(waited), 30, what="the copies in RabbitMQ")
    purge_rabbitmq()
    worker = start_worker("w1", HELIX_LOST_COPY_INTERVAL="1", **setting.env)
    wait_completed(waited, timeout=60)
    completed_once(waited)
    assert run_from(waited) == {"postgresql"}
    assert "migration.lost_copies_reenqueued" in worker.log_path.read_text()


def test_tasks_a_worker_holds_in_its_prefetch_window_get_no_postgresql_copy(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    """RabbitMQ counts a message delivered to a worker and not yet acknowledged as neither ready
    nor gone: the queue looks empty while the worker works through what it holds. Asked, the
    worker names those tasks, and none of them is taken for lost."""
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    held = [submit(api, "sleep", {"seconds": 0.3}) for _ in range(60)]
    worker = start_worker("w1", concurrency=2, HELIX_LOST_COPY_INTERVAL="1", **setting.env)
    wait_completed(held, timeout=90)
    completed_once(held)
    assert run_from(held) == {"rabbitmq"}
    assert "migration.lost_copies_reenqueued" not in worker.log_path.read_text()
