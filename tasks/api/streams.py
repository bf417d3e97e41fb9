"""``GET /v1/tasks/{id}/events`` (Server-Sent Events) and ``WS /v1/ws/tasks/{id}``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse

from tasks.api.auth import find_token
from tasks.api.errors import RETRY_AFTER_SECONDS, error_body, unavailable_body
from tasks.models import Task
from tasks.streams import DATABASE_ERRORS, feed

#: WebSocket close code 1013, "Try Again Later" (RFC 6455 registry).
TRY_AGAIN_LATER = 1013


def _bearer(header: str) -> str:
    scheme, _, key = header.partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


async def _authorised(key: str) -> bool:
    return bool(key) and await sync_to_async(find_token)(key) is not None


async def _task_exists(task_id: str) -> bool:
    return await Task.objects.filter(pk=task_id).aexists()


async def _sse(task_id: str, last_id: int) -> AsyncIterator[str]:
    try:
        async for event in feed(task_id, last_id):
            if event["type"] == "heartbeat":
                yield ": heartbeat\n\n"
            else:
                yield f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
    except DATABASE_ERRORS:  # the database stayed away: say so, and when to come back
        yield f"retry: {RETRY_AFTER_SECONDS * 1000}\nevent: error\ndata: {json.dumps(unavailable_body())}\n\n"


def event_id(raw: str) -> int | None:
    """An event id as a client sends it back, or None: ASCII digits within the id column's range.
    ``str.isdigit`` alone also takes ``²``, and ``int`` refuses both that and more than 4,300
    digits."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or int(raw) >= 2**63:
        return None
    return int(raw)


async def task_events(request: HttpRequest, task_id: Any) -> HttpResponseBase:
    """Stream the task's events; ``Last-Event-ID`` (or ``?last_event_id=``) resumes after one."""
    if not await _authorised(_bearer(request.headers.get("Authorization", ""))):
        return JsonResponse(error_body("not_authenticated", "a valid bearer token is required"), status=401)
    if not await _task_exists(str(task_id)):
        return JsonResponse(error_body("not_found", f"task {task_id} does not exist"), status=404)
    after = event_id(request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or "0")
    if after is None:
        return JsonResponse(error_body("validation_error", "Last-Event-ID: must be an event id (integer)"), status=400)
    response = StreamingHttpResponse(_sse(str(task_id), after), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class TaskEventsConsumer(AsyncJsonWebsocketConsumer):
    """The same events as JSON messages; ``{"type": "ping"}`` is answered with ``{"type": "pong"}``.

    The token comes from the ``Authorization`` header or the ``token`` query parameter (browsers
    cannot set headers on a WebSocket). Closes with 4401 without a valid token, 4404 for an
    unknown task, 1013 after an error message when the database stays unreachable, and normally
    after the terminal event.
    """

    async def connect(self) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in self.scope.get("headers", [])}
        query = parse_qs(self.scope.get("query_string", b"").decode())
        key = _bearer(headers.get("authorization", "")) or (query.get("token") or [""])[0]
        self.task_id = str(self.scope["url_route"]["kwargs"]["task_id"])
        await self.accept()
        if not await _authorised(key):
            await self.close(code=4401)
        elif not await _task_exists(self.task_id):
            await self.close(code=4404)
        else:
            self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for event in feed(self.task_id):
                await self.send_json(event)
        except DATABASE_ERRORS:  # the database stayed away
            await self.send_json({"type": "error", **unavailable_body()})
            await self.close(code=TRY_AGAIN_LATER)
            return
        await self.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """A message that is not JSON text is answered with an error and the feed goes on (Channels
        would end the connection as a server error)."""
        if text_data is None:
            await self._refuse("a binary frame: messages are JSON text")
            return
        try:
            content = json.loads(text_data)
        except ValueError as exc:
            await self._refuse(f"not JSON: {exc}")
            return
        await self.receive_json(content, **kwargs)

    async def _refuse(self, message: str) -> None:
        await self.send_json({"type": "error", **error_body("malformed_json", message)})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def disconnect(self, code: int) -> None:
        pump = getattr(self, "pump", None)
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
