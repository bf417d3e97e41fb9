"""The admin API's rollback and migrate-pending (SPEC §6), on real PostgreSQL and RabbitMQ: what
each answers, what it records, and a 503 with a retry hint while RabbitMQ is stopped."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command

from migration.models import ModeChange, OutboxMessage, QueueMessage
from migration.pgqueue.store import PostgresStore
from tasks.models import Task
from tasks.routing import ALL_QUEUES
from tests.conftest import ModeSetting, pg_depth, purge_rabbitmq, rabbitmq_depth, wait_for
from tests.helpers import submit_many

pytestmark = pytest.mark.django_db(transaction=True)
MESSAGING = ModeSetting("messaging", broker="rabbitmq")


def test_migrate_pending_moves_the_waiting_tasks_and_reports_the_counts(admin_api: Any, switch_mode: Any) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("legacy"))
    submit_many(40)
    switch_mode(MESSAGING)
    response = admin_api.post("/admin/migration/migrate-pending")
    assert response.status_code == 200, response.content
    assert response.json() == {"migrated": 40, "failed": 0, "remaining": 0}
    assert pg_depth() == 0 and rabbitmq_depth() == 40
    assert Task.objects.filter(migrated_at__isnull=False, published_to="rabbitmq").count() == 40
    again = admin_api.post("/admin/migration/migrate-pending")  # idempotent: nothing left to move
    assert again.json() == {"migrated": 0, "failed": 0, "remaining": 0}
    assert rabbitmq_depth() == 40
    purge_rabbitmq()


def test_migrate_pending_moves_a_message_of_no_task_and_drops_one_it_cannot_read(
    admin_api: Any, switch_mode: Any, live_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("legacy"))
    submit_many(20)
    store = PostgresStore(live_db_url)
    foreign = {"body": "e30=", "headers": {"id": "job-7", "task": "other.app.job"}, "properties": {}}
    store.put("helixagent.tasks.background", 0, json.dumps(foreign), None, "job-7")
    store.put("helixagent.tasks.background", 0, "not json", None)
    store.close()
    switch_mode(MESSAGING)
    with caplog.at_level("ERROR", logger="helixagent.migration.migrate_pending"):
        response = admin_api.post("/admin/migration/migrate-pending")
    assert response.status_code == 200, response.content
    assert response.json() == {"migrated": 21, "failed": 0, "remaining": 0}
    assert [r.sample for r in caplog.records if r.getMessage() == "migration.migrate_pending_unreadable"] == [  # type: ignore[attr-defined]
        "not json"
    ]
    assert pg_depth() == 0 and rabbitmq_depth() == 21
    assert Task.objects.filter(migrated_at__isnull=False, published_to="rabbitmq").count() == 20
    purge_rabbitmq()


def test_migrate_pending_outside_messaging_mode_is_refused(admin_api: Any, switch_mode: Any) -> None:
    switch_mode(ModeSetting("dual_write", 50))
    response = admin_api.post("/admin/migration/migrate-pending")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "invalid_transition" and "dual_write" in error["message"]


def test_migrate_pending_with_rabbitmq_stopped_answers_503_and_keeps_every_task(
    admin_api: Any, switch_mode: Any, request: pytest.FixtureRequest
) -> None:
    switch_mode(ModeSetting("legacy"))
    submit_many(30)
    switch_mode(MESSAGING)  # its preflight check needs RabbitMQ up
    request.getfixturevalue("rabbitmq_stopped")
    response = admin_api.post("/admin/migration/migrate-pending")
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "broker_unavailable" and "rabbitmq" in error["message"]
    assert error["details"]["migrated"] == 0 and error["details"]["remaining"] == 30
    assert pg_depth() == 30  # nothing was dropped: the tasks still wait where they were


def test_rollback_through_the_api_records_who_and_why_and_requeues_broker_only_tasks(
    admin_api: Any, switch_mode: Any
) -> None:
    purge_rabbitmq()
    switch_mode(MESSAGING)
    ids = submit_many(20)
    wait_for(lambda: not OutboxMessage.objects.exists(), 30, 0.1, what="published to RabbitMQ")
    assert pg_depth() == 0
    response = admin_api.post("/admin/migration/rollback", {"reason": "p99 too high"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rolled_back"] is True
    assert (body["mode"], body["source"], body["reason"], body["changed_by"]) == (
        "legacy",
        "api",
        "p99 too high",
        "token:operator",
    )
    # Their only copies were in RabbitMQ, which legacy does not consume: each now waits in PostgreSQL.
    assert sorted(QueueMessage.objects.filter(queue__in=ALL_QUEUES).values_list("message_id", flat=True)) == sorted(ids)
    again = admin_api.post("/admin/migration/rollback", {}, format="json")
    assert again.status_code == 200 and again.json()["rolled_back"] is False
    assert ModeChange.objects.filter(mode="legacy", source="api").count() == 1
    bad = admin_api.post("/admin/migration/rollback", {"reason": ["not", "text"]}, format="json")
    assert bad.status_code == 400 and "reason" in bad.json()["error"]["message"]
    purge_rabbitmq()


def test_rollback_on_the_command_line_prints_the_state_and_says_when_there_is_nothing_to_do(
    switch_mode: Any,
) -> None:
    switch_mode(MESSAGING)
    out = io.StringIO()
    call_command("migration", "rollback", "--reason", "drill", stdout=out)
    report = json.loads(out.getvalue())
    assert (report["mode"], report["source"], report["reason"]) == ("legacy", "cli", "drill")
    err = io.StringIO()
    call_command("migration", "rollback", stdout=io.StringIO(), stderr=err)
    assert "already in legacy" in err.getvalue()
    assert ModeChange.objects.filter(mode="legacy", source="cli").count() == 1


def test_a_query_parameter_holding_a_nul_character_is_a_400_on_admin_paths_too(admin_api: Any) -> None:
    response = admin_api.get("/admin/migration/discrepancies", {"kind": "missing\x00copy"})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == "kind: must not hold a NUL character"
