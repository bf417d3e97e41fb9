"""Migration safety proven with faults (SPEC §4): a publisher dying between commit and publish,
a broker stopped while tasks are posted, injected discrepancies, migrate-pending interrupted
with SIGINT, an error storm that triggers the automatic rollback, rollback by environment."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from migration import outbox
from migration.models import Discrepancy, MigrationState, ModeChange, OutboxMessage, QueueMessage
from tasks import service
from tasks.models import Task
from tasks.routing import ALL_QUEUES
from tests.conftest import ROOT, ModeSetting, process_env, purge_rabbitmq, require_env, wait_for
from tests.helpers import completed_once, run_from, submit, submit_many, wait_status

pytestmark = pytest.mark.django_db(transaction=True)
BACKGROUND = "helixagent.tasks.background"


CRASHING_PUBLISHER = """
import os, sys
import django
django.setup()
from migration import outbox
from tasks import service
outbox.publisher.send = lambda *args: None  # the process dies after commit, before any publish
for _ in range(int(sys.argv[1])):
    print(service.submit({"task_type": "noop"})[0].pk, flush=True)
os._exit(0)  # no clean shutdown: nothing left in memory is published
"""


def test_a_publisher_killed_between_commit_and_publish_loses_nothing(
    live_db_url: str, start_worker: Any, switch_mode: Any, tmp_path: Path
) -> None:
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    env = {**process_env(live_db_url, tmp_path, **setting.env), "DJANGO_SETTINGS_MODULE": "helixagent.settings"}
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_PUBLISHER, "30"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 30 and OutboxMessage.objects.count() == 30  # committed, never published
    start_worker("w1", **setting.env)  # its relay publishes what the outbox holds
    for task_id in ids:
        assert wait_status(task_id, "completed", timeout=60).dispatch_source == "rabbitmq"
    completed_once(ids)
    assert not OutboxMessage.objects.exists()


def test_tasks_posted_while_rabbitmq_is_stopped_all_complete_once(
    api: Any, start_worker: Any, switch_mode: Any, request: pytest.FixtureRequest
) -> None:
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", **setting.env)
    before = [submit(api, "noop") for _ in range(10)]
    request.getfixturevalue("rabbitmq_stopped")  # stopped now; started again at teardown
    during = [submit(api, "noop") for _ in range(20)]  # accepted: 202, kept in the outbox
    outbox.publisher.flush(30)
    ids = before + during
    wait_for(lambda: Task.objects.filter(pk__in=ids, status="completed").count() == len(ids), 60, 0.5, what="all done")
    completed_once(ids)
    assert run_from(during) == {"postgresql"}


def rabbitmq_message(queue: str, task_id: str) -> Any:
    """Take ``task_id``'s copy off a RabbitMQ queue (others are put back)."""
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        channel = conn.channel()
        for _ in range(100):
            message = channel.basic_get(queue, no_ack=False)
            if message is None:
                break
            if message.properties.get("message_id") == task_id:
                channel.basic_ack(message.delivery_tag)
                return message
            channel.basic_reject(message.delivery_tag, requeue=True)
    raise AssertionError(f"no RabbitMQ copy of {task_id}")


def republish(message: Any, queue: str, **headers: str) -> None:
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        channel = conn.channel()
        message.properties["application_headers"].update(headers)
        channel.basic_publish(message, exchange="helixagent.tasks", routing_key=queue)


def test_each_injected_discrepancy_is_detected_and_logged_once(
    admin_api: Any, start_worker: Any, switch_mode: Any, tmp_path: Path
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("dual_write", 0))  # PostgreSQL copies run; RabbitMQ copies are shadows
    dropped, altered, orphan = (str(service.submit({"task_type": "echo", "payload": {"n": n}})[0].pk) for n in range(3))
    assert outbox.publisher.flush(30)
    rabbitmq_message(BACKGROUND, dropped)  # drop a RabbitMQ copy
    copy = rabbitmq_message(BACKGROUND, altered)  # alter a payload (its checksum) on the way
    republish(copy, BACKGROUND, helix_checksum="0" * 64)
    QueueMessage.objects.filter(message_id=orphan).delete()  # a RabbitMQ copy whose row is gone
    Task.objects.filter(pk=orphan).delete()
    start_worker("w1", DUAL_WRITE_TIMEOUT="2")
    expected = {
        ("missing_copy", dropped, "rabbitmq"),
        ("mismatch", altered, "rabbitmq"),
        ("orphan_copy", orphan, "rabbitmq"),
    }
    found = wait_for(
        lambda: (rows := set(Discrepancy.objects.values_list("kind", "task_id", "leg"))) >= expected and rows,
        30,
        0.5,
        what="three discrepancies",
    )
    assert found == expected
    lines = [json.loads(line) for line in (tmp_path / "migration-discrepancies.log").read_text().splitlines()]
    assert sorted((line["kind"], line["task_id"], line["leg"]) for line in lines) == sorted(expected)
    listed = admin_api.get("/admin/migration/discrepancies").json()
    assert listed["count"] == 3
    assert admin_api.get("/admin/migration/status").json()["discrepancies_found"] == 3
    completed_once([dropped, altered])


def test_migrate_pending_moves_10000_tasks_survives_sigint_and_each_runs_once(
    live_db_url: str, start_worker: Any, switch_mode: Any, tmp_path: Path
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("legacy"))
    ids = submit_many(10_000, threads=8)
    assert QueueMessage.objects.filter(queue__in=ALL_QUEUES).count() == 10_000
    setting = ModeSetting("messaging", broker="rabbitmq")
    switch_mode(setting)
    env = process_env(live_db_url, tmp_path, **setting.env)
    command = [sys.executable, "manage.py", "migration", "migrate-pending", "--batch-size", "250"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: MigrationState.objects.get(pk=1).tasks_migrated >= 3000, 120, 0.02, what="halfway")
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["interrupted"] and 0 < report["remaining"] < 10_000
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["remaining"] == 0
    assert not QueueMessage.objects.filter(queue__in=ALL_QUEUES).exists()
    assert Task.objects.filter(migrated_at__isnull=False).count() == 10_000
    start_worker("w1", concurrency=8, **setting.env)
    wait_for(lambda: Task.objects.filter(status="completed").count() == 10_000, 600, 1.0, what="10000 completed")
    completed_once(ids)


def test_a_fail_storm_triggers_one_automatic_rollback_and_rabbitmq_tasks_finish_from_postgresql(
    start_worker: Any, switch_mode: Any, tmp_path: Path
) -> None:
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    mail = {"to": ["ops@example.com"], "subject": "s", "body": "b"}
    waiting = [str(service.submit({"task_type": "notify", "payload": mail})[0].pk) for _ in range(20)]
    guard_env = {"AUTO_ROLLBACK": "true", "ERROR_THRESHOLD": "15", "MIN_SAMPLES": "10", "HELIX_VAR_DIR": str(tmp_path)}
    start_worker("w1", queues=BACKGROUND, **guard_env, **setting.env)  # only w1 consumes; notify waits
    storm = [service.submit({"task_type": "fail", "config": {"max_retries": 0}})[0].pk for _ in range(30)]
    assert outbox.publisher.flush(30)
    started = Task.objects.filter(pk__in=storm).order_by("started_at").values_list("started_at", flat=True)
    wait_for(lambda: MigrationState.objects.get(pk=1).mode == "legacy", 30, 0.2, what="automatic rollback")
    rollbacks = list(ModeChange.objects.filter(rollback=True).values_list("source", "reason", "changed_at"))
    assert len(rollbacks) == 1 and rollbacks[0][0] == "auto_rollback" and "failed executions" in rollbacks[0][1]
    first_start = next(t for t in started if t)
    assert (rollbacks[0][2] - first_start).total_seconds() < 10
    start_worker("w2", queues="helixagent.tasks.notifications", HELIX_VAR_DIR=str(tmp_path))
    for task_id in waiting:
        assert wait_status(task_id, "completed", timeout=60).dispatch_source == "postgresql"
    completed_once(waiting)
    assert ModeChange.objects.filter(rollback=True).count() == 1


def test_a_restart_with_migration_mode_legacy_rolls_back_with_source_env(
    start_worker: Any, switch_mode: Any, tmp_path: Path
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("messaging", broker="rabbitmq"))
    in_rabbitmq = [str(service.submit({"task_type": "noop"})[0].pk) for _ in range(5)]
    assert outbox.publisher.flush(30)
    start_worker("w1", MIGRATION_MODE="legacy")
    row = wait_for(lambda: MigrationState.objects.filter(pk=1, mode="legacy").first(), 15, what="legacy")
    assert row.source == "env" and ModeChange.objects.filter(source="env", rollback=True).exists()
    for task_id in in_rabbitmq:  # re-enqueued on PostgreSQL by the rollback
        assert wait_status(task_id, "completed", timeout=30).dispatch_source == "postgresql"


SWITCHES = [
    (ModeSetting("legacy"), ModeSetting("dual_write", 50)),
    (ModeSetting("dual_write", 50), ModeSetting("messaging", broker="rabbitmq")),
    (ModeSetting("dual_write", 50), ModeSetting("messaging", broker="kafka")),
    (ModeSetting("messaging", broker="rabbitmq"), ModeSetting("dual_write", 50)),
    (ModeSetting("messaging", broker="kafka"), ModeSetting("dual_write", 50)),
    (ModeSetting("messaging", broker="rabbitmq"), ModeSetting("messaging", broker="kafka")),
    (ModeSetting("messaging", broker="kafka"), ModeSetting("messaging", broker="rabbitmq")),
    (ModeSetting("dual_write", 50), ModeSetting("legacy")),
    (ModeSetting("messaging", broker="kafka"), ModeSetting("legacy")),
]


@pytest.mark.parametrize("before, after", SWITCHES, ids=[f"{a.id}-to-{b.id}" for a, b in SWITCHES])
def test_tasks_waiting_at_a_switch_complete_once_on_a_worker_started_after_it(
    start_worker: Any, switch_mode: Any, before: ModeSetting, after: ModeSetting
) -> None:
    """No worker runs until after the switch, so only the new mode's consumers (and the copies
    the switch adds) can run what waited: nothing is stranded in a broker the mode left."""
    purge_rabbitmq()
    switch_mode(before)
    waiting = [str(service.submit({"task_type": "noop"})[0].pk) for _ in range(10)]
    assert outbox.publisher.flush(30)
    switch_mode(after)  # a change of broker alone is no mode change: the worker's sweep copies them
    start_worker("w1", **after.env)
    for task_id in waiting:
        wait_status(task_id, "completed", timeout=30)
    completed_once(waiting)


def test_a_running_worker_copies_a_task_published_to_a_broker_its_mode_does_not_consume(
    start_worker: Any, switch_mode: Any
) -> None:
    switch_mode(ModeSetting("dual_write", 0))
    start_worker("w1")
    # as a process that had not yet seen the switch would leave it: its only copy is in Kafka
    task = Task.objects.create(task_type="noop", status="queued", published_to="kafka")
    assert wait_status(str(task.pk), "completed", timeout=30).dispatch_source == "postgresql"
