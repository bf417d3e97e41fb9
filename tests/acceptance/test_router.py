"""The router with real RabbitMQ and Kafka: every mode end to end, the dual_write split, live mode
changes seen by running workers, Kafka sharing and crashes, and the preflight check."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Count

from migration import modes, outbox, state
from migration.models import Discrepancy, MigrationState, ModeChange, QueueMessage
from tasks import service
from tasks.models import Task, TaskEvent
from tasks.routing import ALL_QUEUES
from tests.conftest import ModeSetting, pg_depth, purge_rabbitmq, rabbitmq_depth, wait_for
from tests.helpers import event_path, submit, submit_many, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def expected_source(setting: ModeSetting, task_id: str) -> str:
    if setting.mode == "dual_write":
        return modes.executing_source(task_id, setting.rabbitmq_percent)
    return setting.broker if setting.mode == "messaging" else "postgresql"


def test_each_mode_runs_tasks_from_its_source(api: Any, start_worker: Any, migration_mode: ModeSetting) -> None:
    start_worker("w1", **migration_mode.env)
    ids = [submit(api, "echo", {"n": n}) for n in range(20)]
    for task_id in ids:
        task = wait_status(task_id, "completed", timeout=60)
        assert task.dispatch_source == expected_source(migration_mode, task_id), task_id
        assert event_path(task_id) == ["pending", "queued", "running", "completed"]
    sources = set(Task.objects.values_list("dispatch_source", flat=True))
    if migration_mode.id == "dual_write-50":
        assert sources == {"postgresql", "rabbitmq"}
    wait_for(lambda: pg_depth() == 0, 10, what="PostgreSQL queue empty")
    wait_for(lambda: rabbitmq_depth() == 0, 10, what="RabbitMQ queues empty")


def test_dual_write_at_30_percent_splits_2000_tasks_leaves_no_message_and_logs_no_discrepancy(
    start_worker: Any, switch_mode: Any, tmp_path: Path
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("dual_write", 30))
    # The verifier judges each task once it is older than the timeout, which must outlast the
    # backlog of 2,000 (a copy still waiting then would rightly count as missing).
    start_worker("w1", concurrency=8, DUAL_WRITE_TIMEOUT="20")
    ids = submit_many(2000)
    wait_for(lambda: Task.objects.filter(status="completed").count() == 2000, 300, 1.0, what="2000 completed tasks")
    sources = Counter(Task.objects.values_list("dispatch_source", flat=True))
    share = sources["rabbitmq"] / 2000
    assert 0.27 <= share <= 0.33, sources
    assert sources["rabbitmq"] == sum(modes.executing_source(i, 30) == "rabbitmq" for i in ids)
    claims = TaskEvent.objects.filter(to_status="running").values("task_id").annotate(n=Count("id"))
    assert len(claims) == 2000 and {row["n"] for row in claims} == {1}, "a task ran twice"
    wait_for(lambda: pg_depth() == 0 and rabbitmq_depth() == 0, 30, 0.5, what="both queues empty")
    wait_for(lambda: not Task.objects.filter(verified_at__isnull=True).exists(), 60, 0.5, what="every task verified")
    assert list(Discrepancy.objects.values_list("kind", "task_id", "leg")) == []
    assert (tmp_path / "migration-discrepancies.log").read_text() == ""  # the worker opened it and wrote nothing


def test_moving_the_split_between_the_two_copies_of_a_task_leaves_one_to_run_it(
    start_worker: Any, switch_mode: Any
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("dual_write", 0))  # published now: the PostgreSQL copies run the tasks
    ids = [str(service.submit({"task_type": "noop"})[0].pk) for _ in range(30)]
    assert outbox.publisher.flush(30)
    QueueMessage.objects.filter(queue__in=ALL_QUEUES).update(visible_at=time.time() + 3600)  # PostgreSQL lags
    start_worker("w1")
    wait_for(lambda: rabbitmq_depth() == 0, 30, what="the RabbitMQ copies taken as shadows")
    time.sleep(1.0)  # shadows are settled in batches, within 0.2 s
    assert set(Task.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"queued"}
    state.set_split(100, by="tests", source="api")
    time.sleep(2.0)  # the worker follows the move
    QueueMessage.objects.filter(queue__in=ALL_QUEUES).update(visible_at=0)  # the PostgreSQL copies arrive
    for task_id in ids:
        assert wait_status(task_id, "completed", timeout=15).dispatch_source == "postgresql"
    assert not Discrepancy.objects.exists()


def test_a_mode_change_through_the_api_reaches_two_running_workers_within_two_seconds(
    api: Any, admin_api: Any, start_worker: Any, switch_mode: Any
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("legacy", 100))
    start_worker("w1")
    start_worker("w2")
    assert wait_status(submit(api, "noop"), "completed").dispatch_source == "postgresql"

    for mode, source in (("dual_write", "rabbitmq"), ("legacy", "postgresql")):
        response = admin_api.post("/admin/migration/mode", {"mode": mode, "reason": "drill"}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["mode"] == mode and response.json()["source"] == "api"
        time.sleep(2.0)
        ids = [submit(api, "noop") for _ in range(20)]
        tasks = [wait_status(task_id, "completed", timeout=30) for task_id in ids]
        assert {task.dispatch_source for task in tasks} == {source}, mode
        assert {task.worker_id.split("@")[0] for task in tasks} == {"w1", "w2"}, "both workers follow the change"
    changes = list(ModeChange.objects.filter(source="api").values_list("mode", "changed_by", "reason"))
    assert ("dual_write", "token:operator", "drill") in changes


def test_messaging_on_kafka_shares_2000_tasks_between_two_workers_and_survives_a_kill(
    start_worker: Any, switch_mode: Any
) -> None:
    setting = ModeSetting("messaging", broker="kafka")
    switch_mode(setting)
    first = start_worker("w1", **setting.env)
    start_worker("w2", **setting.env)
    ids = submit_many(2000, threads=8)
    wait_for(
        lambda: (
            Task.objects.filter(status="completed", worker_id__startswith="w1@").exists()
            and Task.objects.filter(status="completed", worker_id__startswith="w2@").exists()
        ),
        60,
        what="both workers executing",
    )
    first.kill()  # SIGKILL mid-run: uncommitted offsets and claimed rows are left behind
    wait_for(lambda: Task.objects.filter(status="completed").count() == 2000, 300, 1.0, what="2000 completed tasks")
    completions = Counter(
        dict(TaskEvent.objects.filter(to_status="completed").values_list("task_id").annotate(n=Count("id")))
    )
    assert set(map(str, completions)) == set(ids) and set(completions.values()) == {1}
    assert set(Task.objects.values_list("dispatch_source", flat=True)) == {"kafka"}
    by_worker = Counter(w.split("@")[0] for w in Task.objects.values_list("worker_id", flat=True))
    assert by_worker["w1"] > 0 and by_worker["w2"] > 0, by_worker


def test_switching_to_messaging_while_rabbitmq_is_stopped_is_refused(
    admin_api: Any, switch_mode: Any, rabbitmq_stopped: None
) -> None:
    switch_mode(ModeSetting("legacy"))
    before = ModeChange.objects.count()
    response = admin_api.post("/admin/migration/mode", {"mode": "messaging", "force": True}, format="json")
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "broker_unavailable" and "rabbitmq" in error["message"]
    assert error["details"]["broker"] == "rabbitmq"
    assert MigrationState.objects.get(pk=1).mode == "legacy"
    assert ModeChange.objects.count() == before
