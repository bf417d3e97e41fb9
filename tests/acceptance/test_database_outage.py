"""With the database unreachable, the API answers 503 with a retry hint, never a silent 2xx."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port, start_api, wait_for


def request(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], dict[str, object]]:
    req = urllib.request.Request(
        url, data=body, headers={"Authorization": "Bearer hx_x", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def test_api_answers_503_with_retry_after_when_postgresql_is_down(tmp_path: Path) -> None:
    dead_db = f"postgresql://helixagent:helixagent@127.0.0.1:{free_port()}/helixagent"
    server, base = start_api(dead_db, tmp_path)
    try:

        def health_answers() -> tuple[int, dict[str, str], dict[str, object]] | None:
            try:
                return request(f"{base}/health")
            except OSError:
                return None

        status, headers, body = wait_for(health_answers, 30, what="api up")
        assert status == 503 and body["status"] == "unavailable" and headers["Retry-After"]
        status, headers, body = request(f"{base}/v1/tasks", json.dumps({"task_type": "echo"}).encode())
        assert status == 503, body
        assert body["error"]["code"] == "service_unavailable"  # type: ignore[index]
        assert int(headers["Retry-After"]) > 0
    finally:
        server.terminate()
        server.wait(20)
