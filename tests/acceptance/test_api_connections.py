"""The API process under uvicorn and PostgreSQL: requests borrow pooled sessions instead of
opening one each, open event streams do not keep them, and a database that stops answering gets
a 503 in bounded time, not a hang."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from helixagent.config import get_config
from tasks.models import ApiToken
from tests.conftest import api_server, postgres_frozen, wait_for
from tests.helpers import http_call

pytestmark = pytest.mark.django_db(transaction=True)
TASK = json.dumps({"task_type": "noop"}).encode()


def sessions_opened() -> int:
    """Sessions PostgreSQL has opened on the test database so far."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def test_requests_borrow_pooled_sessions_instead_of_opening_one_each(live_api: str) -> None:
    _token, key = ApiToken.issue("pool")
    before = sessions_opened()
    for _ in range(40):
        assert http_call(f"{live_api}/v1/tasks", key, TASK)[0] == 202
        assert http_call(f"{live_api}/v1/tasks?limit=1", key)[0] == 200
    assert sessions_opened() - before <= get_config().api.database_pool


def test_open_event_streams_leave_the_pool_to_other_requests(live_db_url: str, tmp_path: Path) -> None:
    _token, key = ApiToken.issue("streams")
    with api_server(live_db_url, tmp_path, HELIX_API_DATABASE_POOL="2") as base:
        task_id = http_call(f"{base}/v1/tasks", key, TASK)[2]["id"]  # no worker runs it: its feed stays open
        events = f"{base}/v1/tasks/{task_id}/events"
        request = urllib.request.Request(events, headers={"Authorization": f"Bearer {key}"})
        streams = []
        try:
            for _ in range(4):  # twice the pool
                streams.append(urllib.request.urlopen(request, timeout=15))
                assert streams[-1].readline().startswith(b"id: ")
            for _ in range(5):
                assert http_call(f"{base}/v1/tasks", key, TASK)[0] == 202
        finally:
            for stream in streams:
                stream.close()


def test_a_hung_database_gets_503_within_the_database_timeout_then_the_api_recovers(
    live_db_url: str, tmp_path: Path
) -> None:
    _token, key = ApiToken.issue("hang")
    with api_server(live_db_url, tmp_path, HELIX_API_DATABASE_TIMEOUT="2") as base:
        assert http_call(f"{base}/v1/tasks", key, TASK)[0] == 202  # the pool holds sessions from now on
        with postgres_frozen():  # sessions stay open and nothing answers
            for path, body in [("/v1/tasks", TASK), ("/v1/tasks", None), ("/health", None), ("/v1/tasks", TASK)]:
                status, headers, payload = http_call(f"{base}{path}", key, body)
                assert status == 503, payload
                assert int(headers["Retry-After"]) > 0
        # and it serves again once the database answers
        wait_for(lambda: http_call(f"{base}/v1/tasks", key, TASK)[0] == 202, 30, 0.5, what="api recovered")
