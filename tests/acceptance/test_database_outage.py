"""With the database unreachable, the API answers 503 with a retry hint, never a silent 2xx."""

from __future__ import annotations

import json
from email.message import Message
from pathlib import Path
from typing import Any

from tests.conftest import free_port, start_api, wait_for
from tests.helpers import http_call


def test_api_answers_503_with_retry_after_when_postgresql_is_down(tmp_path: Path) -> None:
    dead_db = f"postgresql://helixagent:helixagent@127.0.0.1:{free_port()}/helixagent"
    server, base = start_api(dead_db, tmp_path)
    try:

        def health_answers() -> tuple[int, Message, dict[str, Any]] | None:
            try:
                return http_call(f"{base}/health", "hx_x")
            except OSError:
                return None

        status, headers, body = wait_for(health_answers, 30, what="api up")
        assert status == 503 and body["status"] == "unavailable" and headers["Retry-After"]
        status, headers, body = http_call(f"{base}/v1/tasks", "hx_x", json.dumps({"task_type": "echo"}).encode())
        assert status == 503, body
        assert body["error"]["code"] == "service_unavailable"
        assert int(headers["Retry-After"]) > 0
    finally:
        server.terminate()
        server.wait(20)
