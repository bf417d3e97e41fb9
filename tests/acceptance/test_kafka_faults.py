"""Kafka restarts and hangs in messaging mode: the worker and the submitting process reconnect
by themselves after a restart, a rollback reaches the worker while Kafka hangs, nothing is lost,
and every task completes once. So does a work topic deleted under a worker or with tasks in it."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from migration.models import OutboxMessage
from tasks.models import Task
from tests.conftest import ROOT, ModeSetting, delete_kafka_work_topic, kafka_frozen, wait_for
from tests.helpers import completed_once, run_from, submit, wait_completed

pytestmark = pytest.mark.django_db(transaction=True)


def restart_kafka() -> None:
    result = subprocess.run(
        ["scripts/services.sh", "restart-kafka"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_kafka_restart_under_load_loses_nothing_and_does_not_flood_the_log(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    setting = ModeSetting("messaging", broker="kafka")
    switch_mode(setting)
    worker = start_worker("w1", **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.2}) for _ in range(300)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    restart_kafka()
    assert Task.objects.filter(pk__in=first, status="completed").count() < len(first), "no load left at the restart"
    later = [submit(api, "noop") for _ in range(50)]
    wait_completed(first + later, timeout=120)
    completed_once(first + later)
    # librdkafka logs each refused connection, several a second per client: the worker's
    # log keeps one line per kind and 30 s
    refused = worker.log_path.read_text().count("Connection refused")
    assert 0 < refused <= 10, f"{refused} lines about refused connections in the worker's log"


@pytest.mark.parametrize("hung_for", [0, 12], ids=["at-once", "after-the-session-ended"])
def test_a_rollback_while_kafka_hangs_under_load_reaches_the_worker(
    api: Any, admin_api: Any, start_worker: Any, switch_mode: Any, hung_for: float
) -> None:
    """The operator's way out of a hung Kafka is a rollback: the worker must not wait on Kafka
    to follow it, whether its consumer still has a session (``at-once``) or has lost it (past
    the 10 s session timeout) with tasks under way, whose offsets are not committed yet."""
    setting = ModeSetting("messaging", broker="kafka")
    switch_mode(setting)
    start_worker("w1", **setting.env)
    load = [submit(api, "sleep", {"seconds": 1}) for _ in range(60)]  # 15 s of work for 4 threads
    wait_for(lambda: Task.objects.filter(pk__in=load, status="completed").count() >= 4, 60, what="work under way")
    with kafka_frozen():
        time.sleep(hung_for)
        response = admin_api.post("/admin/migration/rollback", {"reason": "Kafka hangs"}, format="json")
        assert response.status_code == 200, response.content
        later = [submit(api, "noop") for _ in range(20)]
        wait_completed(load + later, timeout=90)
        sources = run_from(later)
    assert sources == {"postgresql"}
    completed_once(load + later)


def test_a_worker_stopped_while_kafka_hangs_exits_and_its_tasks_run_on_the_next(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    """SIGTERM during a Kafka hang: the warm shutdown ends the tasks under way and the worker
    exits by itself (its last commit and group leave wait at most ``CLOSE_TIMEOUT``); the tasks
    it had taken and not run come again from Kafka to the next worker."""
    setting = ModeSetting("messaging", broker="kafka")
    switch_mode(setting)
    first = start_worker("w1", **setting.env)
    ids = [submit(api, "sleep", {"seconds": 0.5}) for _ in range(40)]
    wait_for(lambda: Task.objects.filter(pk__in=ids, status="completed").count() >= 4, 60, what="work under way")
    with kafka_frozen():
        first.stop()  # SIGTERM; SIGKILL if the worker has not exited 20 s later
    assert first.process.returncode == 0, f"the worker did not exit by itself ({first.process.returncode})"
    assert Task.objects.filter(pk__in=ids, status="completed").count() < len(ids), "nothing was left to hand back"
    start_worker("w2", **setting.env)
    wait_completed(ids, timeout=120)
    completed_once(ids)


def test_tasks_whose_work_topic_was_deleted_before_a_worker_read_them_complete_once(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    """The deletion takes the only copies of ten waiting tasks: the worker finds the group's lag
    at zero while they wait, and gives each a PostgreSQL copy."""
    setting = ModeSetting("messaging", broker="kafka")
    switch_mode(setting)
    waited = [submit(api, "noop") for _ in range(10)]
    wait_for(lambda: not OutboxMessage.objects.exists(), 30, what="the copies published")
    delete_kafka_work_topic()
    worker = start_worker("w1", HELIX_LOST_COPY_INTERVAL="1", **setting.env)
    wait_completed(waited, timeout=60)
    completed_once(waited)
    assert run_from(waited) == {"postgresql"}
    assert "migration.lost_copies_reenqueued" in worker.log_path.read_text()


def test_a_work_topic_deleted_under_a_running_worker_is_read_from_the_start_once_made_again(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    """The next publish makes the topic again at once, and librdkafka would go on fetching each
    partition from its old position, skipping the messages below it. The search for lost copies
    is held back here: the worker's own watch of the topic must find every message."""
    setting = ModeSetting("messaging", broker="kafka")
    switch_mode(setting)
    delete_kafka_work_topic()  # positions low enough for the new topic's offsets to pass them
    worker = start_worker("w1", HELIX_LOST_COPY_INTERVAL="3600", **setting.env)
    wait_completed([submit(api, "noop") for _ in range(8)], timeout=60)  # a position on most partitions
    delete_kafka_work_topic()
    later = [submit(api, "noop") for _ in range(40)]  # reaching past those positions
    wait_completed(later, timeout=90)
    completed_once(later)
    assert run_from(later) == {"kafka"}
    # The watch reads the topic's id every 10 s; librdkafka may have reset a partition whose
    # old position lay past the new end before that, and then nothing was waiting on the watch.
    wait_for(lambda: "kafka.topic_recreated" in worker.log_path.read_text(), 30, what="the new topic noticed")
