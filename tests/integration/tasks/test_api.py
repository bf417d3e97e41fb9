"""The task API on a real PostgreSQL: validation, auth, idempotency, listing, cancel, OpenAPI."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from migration import outbox
from tasks.models import ApiToken, Task, TaskEvent
from tests.conftest import ModeSetting

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("migration_mode")]


def post(api: Any, body: Any, **headers: str) -> Any:
    return api.post("/v1/tasks", body, format="json", **headers)


def assert_error(response: Any, status: int, code: str, mentions: str) -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert mentions in error["message"], error


def test_post_accepts_a_task_and_queues_it(api: Any) -> None:
    response = post(api, {"task_type": "echo", "payload": {"a": 1}, "priority": "high"})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {
        "id",
        "task_type",
        "task_name",
        "status",
        "priority",
        "queue",
        "scheduled_at",
        "created_at",
        "message",
    }
    assert (body["status"], body["priority"], body["queue"]) == ("queued", "high", "helixagent.tasks.background")
    events = list(TaskEvent.objects.filter(task_id=body["id"]).order_by("id").values_list("from_status", "to_status"))
    assert events == [("", "pending"), ("pending", "queued")]


def test_notify_tasks_go_to_the_notifications_queue(api: Any) -> None:
    assert (
        post(api, {"task_type": "notify", "payload": {"to": "a@b.c"}}).json()["queue"]
        == "helixagent.tasks.notifications"
    )


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"task_type": "teleport"}, "task_type"),
        ({"payload": {}}, "task_type"),
        ({"task_type": "echo", "priority": "urgent"}, "priority"),
        ({"task_type": "echo", "payload": [1, 2]}, "payload"),
        ({"task_type": "echo", "scheduled_at": "next tuesday"}, "scheduled_at"),
        ({"task_type": "echo", "deadline": "2026-13-45T99:00:00Z"}, "deadline"),
        ({"task_type": "echo", "parent_task_id": "not-a-uuid"}, "parent_task_id"),
        ({"task_type": "echo", "config": {"max_retries": -1}}, "config.max_retries"),
        ({"task_type": "echo", "config": {"retries": 3}}, "config"),
        ({"task_type": "echo", "payload": {"text": "a\x00b"}}, "payload: holds a NUL character"),
        ({"task_type": "echo", "task_name": "a\x00b"}, "task_name"),
        (
            {"task_type": "echo", "scheduled_at": "2030-01-02T00:00:00Z", "deadline": "2030-01-01T00:00:00Z"},
            "deadline",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api: Any, body: dict[str, Any], mentions: str) -> None:
    response = post(api, body)
    assert response.status_code == 400, response.content
    assert mentions in response.json()["error"]["message"]
    assert not Task.objects.exists()


def test_payload_over_one_mebibyte_is_refused(api: Any) -> None:
    response = post(api, {"task_type": "echo", "payload": {"blob": "x" * (1024 * 1024)}})
    assert_error(response, 400, "validation_error", "payload")
    assert "1 MiB" in response.json()["error"]["message"]


def test_malformed_json_is_a_400(api: Any) -> None:
    response = api.post("/v1/tasks", data='{"task_type": "echo",', content_type="application/json")
    assert_error(response, 400, "malformed_json", "JSON")


def test_a_payload_holding_a_lone_surrogate_is_a_400(api: Any) -> None:
    body = '{"task_type": "echo", "payload": {"text": "\\ud800"}}'  # valid JSON, but not Unicode text
    response = api.post("/v1/tasks", data=body, content_type="application/json")
    assert_error(response, 400, "validation_error", "payload: holds a lone surrogate")
    assert not Task.objects.exists()


def test_json_nested_deeper_than_the_decoder_goes_is_a_400(api: Any) -> None:
    body = '{"task_type": "echo", "payload": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    response = api.post("/v1/tasks", data=body, content_type="application/json")
    assert_error(response, 400, "malformed_json", "nested too deeply")


def test_requests_without_a_valid_token_are_refused(api: Any) -> None:
    from rest_framework.test import APIClient

    assert_error(APIClient().get("/v1/tasks"), 401, "not_authenticated", "credentials")
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer nope")
    assert_error(bad.get("/v1/tasks"), 401, "authentication_failed", "token")


def test_a_revoked_token_stops_working(api: Any) -> None:
    from django.utils import timezone
    from rest_framework.test import APIClient

    token, key = ApiToken.issue("short-lived")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/v1/tasks").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert client.get("/v1/tasks").status_code == 401


def test_idempotency_key_returns_the_same_task(api: Any) -> None:
    first = post(api, {"task_type": "echo"}, HTTP_IDEMPOTENCY_KEY="order-17").json()
    second = post(api, {"task_type": "echo"}, HTTP_IDEMPOTENCY_KEY="order-17").json()
    assert first["id"] == second["id"]
    assert Task.objects.count() == 1


def test_list_filters_and_paginates_with_a_cursor(api: Any) -> None:
    for n in range(5):
        post(api, {"task_type": "echo", "correlation_id": "batch-a" if n < 3 else "batch-b"})
    page = api.get("/v1/tasks", {"correlation_id": "batch-a", "limit": 2}).json()
    assert len(page["results"]) == 2 and page["next"]
    rest = api.get(page["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None
    ids = {t["id"] for t in page["results"] + rest["results"]}
    assert len(ids) == 3
    assert_error(api.get("/v1/tasks", {"status": "sleeping"}), 400, "validation_error", "status")
    assert_error(api.get("/v1/tasks", {"parent_task_id": "nope"}), 400, "validation_error", "parent_task_id")


def test_detail_status_and_unknown_ids(api: Any) -> None:
    task_id = post(api, {"task_type": "echo", "payload": {"k": "v"}}).json()["id"]
    detail = api.get(f"/v1/tasks/{task_id}").json()
    assert detail["payload"] == {"k": "v"} and detail["status"] == "queued"
    status = api.get(f"/v1/tasks/{task_id}/status").json()
    assert status["status"] == "queued" and status["progress"] == 0
    assert_error(api.get(f"/v1/tasks/{uuid.uuid4()}"), 404, "not_found", "does not exist")


def test_cancel_pending_then_refuse_a_second_cancel(api: Any) -> None:
    task_id = post(api, {"task_type": "echo", "scheduled_at": "2099-01-01T00:00:00Z"}).json()["id"]
    response = api.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert_error(api.post(f"/v1/tasks/{task_id}/cancel"), 409, "invalid_state", "cancelled")


def test_scheduled_task_waits_unpublished(api: Any) -> None:
    body = post(api, {"task_type": "echo", "scheduled_at": "2099-01-01T00:00:00Z"}).json()
    assert body["status"] == "pending" and body["scheduled_at"].startswith("2099")


def test_openapi_document_describes_every_endpoint(api: Any) -> None:
    schema = api.get("/openapi.json").json()
    for path in (
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}/status",
        "/v1/tasks/{task_id}/cancel",
        "/v1/tasks/{task_id}/events",
        "/health",
    ):
        assert path in schema["paths"], path
    assert "202" in schema["paths"]["/v1/tasks"]["post"]["responses"]


def test_health_reports_database_and_queue(api: Any, migration_mode: ModeSetting) -> None:
    post(api, {"task_type": "echo"})
    assert outbox.publisher.flush(30)  # a broker copy leaves after the response
    body = api.get("/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["task_queue"]["mode"] == migration_mode.mode
    assert body["task_queue"]["pending"] == 1
    depths = body["task_queue"]["queue_depths"]
    if migration_mode.id == "messaging-kafka":  # one work topic for every queue
        assert depths["helixagent.tasks"] >= 1
    else:
        assert depths == {"helixagent.tasks.background": 1}


def test_unknown_routes_answer_json(api: Any) -> None:
    assert_error(api.get("/v1/nothing-here"), 404, "not_found", "/v1/nothing-here")


def test_an_idempotency_key_longer_than_the_column_is_a_400(api: Any) -> None:
    assert_error(
        post(api, {"task_type": "echo"}, HTTP_IDEMPOTENCY_KEY="k" * 201), 400, "validation_error", "Idempotency-Key"
    )
    assert not Task.objects.exists()


def test_a_list_filter_holding_a_nul_character_is_a_400(api: Any) -> None:
    assert_error(api.get("/v1/tasks", {"correlation_id": "a\x00b"}), 400, "validation_error", "correlation_id")


@pytest.mark.parametrize("position", ["abc", "2026-13-45", "\x00"])
def test_a_cursor_edited_by_hand_is_refused_like_an_undecodable_one(api: Any, position: str) -> None:
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    assert_error(api.get("/v1/tasks", {"cursor": cursor}), 404, "not_found", "Invalid cursor")
