"""OpenAPI additions for the endpoints that are not DRF views (the SSE stream)."""

from __future__ import annotations

from typing import Any


def add_streaming_endpoints(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing hook: describe ``GET /v1/tasks/{task_id}/events``."""
    result.setdefault("paths", {})["/v1/tasks/{task_id}/events"] = {
        "get": {
            "operationId": "v1_tasks_events",
            "summary": "Server-Sent Events: one event per transition or progress report",
            "description": (
                "Each event has `id:` (resume with the Last-Event-ID header), `event:` (`transition` or "
                "`progress`) and JSON `data`. Heartbeat comments while idle; the stream ends after the "
                "terminal event. The same events are sent as JSON over WS /v1/ws/tasks/{task_id}, "
                'which answers {"type": "ping"} with {"type": "pong"}.'
            ),
            "parameters": [
                {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}},
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "integer"}},
            ],
            "responses": {
                "200": {
                    "description": "event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "401": {"description": "missing or unknown token"},
                "404": {"description": "unknown task"},
            },
            "security": [{"bearerAuth": []}],
        }
    }
    return result
