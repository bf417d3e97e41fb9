"""Following a task: Server-Sent Events and the WebSocket feed, both from the API served by uvicorn."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.sync.client import ClientConnection, connect

from tasks.models import ApiToken
from tests.conftest import restart_postgres
from tests.helpers import submit, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def read_sse(url: str, key: str, last_event_id: int | None = None) -> list[dict[str, Any]]:
    """Read a whole event stream (it ends after the terminal event) into its events."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    if last_event_id is not None:
        request.add_header("Last-Event-ID", str(last_event_id))
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif line.startswith(("id:", "event:", "data:")):
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
    return events


def test_sse_streams_every_transition_and_resumes_from_last_event_id(
    api: Any, start_worker: Any, live_api: str
) -> None:
    _token, key = ApiToken.issue("sse")
    start_worker()
    task_id = submit(api, "sleep", {"seconds": 1.2})
    events = read_sse(f"{live_api}/v1/tasks/{task_id}/events", key)
    statuses = [e["data"]["status"] for e in events if e["event"] == "transition"]
    assert statuses == ["pending", "queued", "running", "completed"]
    assert any(e["event"] == "progress" for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    running = next(int(e["id"]) for e in events if e["data"]["status"] == "running")
    resumed = read_sse(f"{live_api}/v1/tasks/{task_id}/events", key, last_event_id=running)
    assert [int(e["id"]) for e in resumed] == [i for i in ids if i > running]


def test_sse_refuses_missing_tokens_and_unknown_tasks(api: Any, live_api: str) -> None:
    _token, key = ApiToken.issue("sse")
    task_id = submit(api, "noop", scheduled_at="2099-01-01T00:00:00Z")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{live_api}/v1/tasks/{task_id}/events", timeout=10)
    assert denied.value.code == 401
    request = urllib.request.Request(
        f"{live_api}/v1/tasks/00000000-0000-0000-0000-000000000000/events", headers={"Authorization": f"Bearer {key}"}
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 404


def websocket(live_api: str, path: str) -> ClientConnection:
    """A WebSocket connection to the API served by uvicorn, as in production."""
    return connect(live_api.replace("http://", "ws://", 1) + path, open_timeout=10)


def test_websocket_sends_the_same_events_and_answers_ping(api: Any, start_worker: Any, live_api: str) -> None:
    _token, key = ApiToken.issue("ws")
    start_worker()
    task_id = submit(api, "echo", {"via": "ws"})
    wait_status(task_id, "completed")
    received = []
    with websocket(live_api, f"/v1/ws/tasks/{task_id}?token={key}") as socket:
        socket.send(json.dumps({"type": "ping"}))
        with pytest.raises(ConnectionClosedOK):  # the feed ends after the terminal event
            while True:
                received.append(json.loads(socket.recv(10)))
    assert [m for m in received if m["type"] == "pong"] == [{"type": "pong"}]
    assert [m["status"] for m in received if m["type"] != "pong"] == ["pending", "queued", "running", "completed"]


def test_websocket_without_a_token_is_closed_with_4401(api: Any, live_api: str) -> None:
    task_id = submit(api, "noop", scheduled_at="2099-01-01T00:00:00Z")
    with websocket(live_api, f"/v1/ws/tasks/{task_id}") as socket, pytest.raises(ConnectionClosedError) as closed:
        socket.recv(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_websocket_answers_a_message_it_cannot_read_with_an_error_and_stays_open(api: Any, live_api: str) -> None:
    _token, key = ApiToken.issue("ws")
    task_id = submit(api, "noop", scheduled_at="2099-01-01T00:00:00Z")  # pending: the feed stays open
    with websocket(live_api, f"/v1/ws/tasks/{task_id}?token={key}") as socket:
        assert json.loads(socket.recv(10))["status"] == "pending"
        socket.send("ping?")
        socket.send(b"\x00\x01")
        errors = [json.loads(socket.recv(10)) for _ in range(2)]
        assert [e["type"] for e in errors] == ["error", "error"], errors
        assert [e["error"]["code"] for e in errors] == ["malformed_json", "malformed_json"], errors
        socket.send(json.dumps({"type": "ping"}))
        assert json.loads(socket.recv(10)) == {"type": "pong"}


def test_sse_and_websocket_feeds_wait_out_a_postgresql_restart(api: Any, start_worker: Any, live_api: str) -> None:
    """Both feeds stay open through a restart of PostgreSQL and end with the terminal event."""
    _token, key = ApiToken.issue("streams")
    start_worker()
    task_id = submit(api, "sleep", {"seconds": 6})
    wait_status(task_id, "running", timeout=30)
    got: dict[str, Any] = {}

    def follow_sse() -> None:
        events = read_sse(f"{live_api}/v1/tasks/{task_id}/events", key)
        got["sse"] = [e["data"]["status"] for e in events if e["event"] == "transition"]

    def follow_websocket() -> None:
        received = []
        with websocket(live_api, f"/v1/ws/tasks/{task_id}?token={key}") as socket, pytest.raises(ConnectionClosedOK):
            while True:
                received.append(json.loads(socket.recv(30)))
        got["websocket"] = [m["status"] for m in received if m["type"] == "transition"]

    readers = [threading.Thread(target=follow_sse), threading.Thread(target=follow_websocket)]
    for reader in readers:
        reader.start()
    time.sleep(1)  # both feeds are open and polling
    restart_postgres("restart-postgres", "3")
    for reader in readers:
        reader.join(60)
    expected = ["pending", "queued", "running", "completed"]
    assert got == {"sse": expected, "websocket": expected}
