"""The event feed of one task, shared by Server-Sent Events and WebSocket.

A feed yields the task's event rows after a given event id (the SSE ``id:``, which a client
resumes from with ``Last-Event-ID``) and ends after the event that put the task in a terminal
state. New rows are found by polling the event table every :data:`POLL_SECONDS`.

A feed waits out a database outage of up to :data:`OUTAGE_SECONDS` (heartbeats go on), so a
restart of PostgreSQL does not end every open stream at once and bring all their clients back
together while it recovers. A longer outage ends the feed with the database error.

Each poll gives its database connection back when it is done (Channels' ``database_sync_to_async``
closes old connections around the call, as a request does): a feed lasts as long as its task,
and in the API process a connection held for all of it would be one fewer in the pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError

from tasks import states
from tasks.models import Task, TaskEvent

POLL_SECONDS = 0.25
#: an idle feed sends a heartbeat this often so proxies and clients keep the stream open.
HEARTBEAT_SECONDS = 15.0
#: how long a feed waits for an unreachable database, trying again every OUTAGE_RETRY_SECONDS.
OUTAGE_SECONDS = 30.0
OUTAGE_RETRY_SECONDS = 1.0
DATABASE_ERRORS = (OperationalError, InterfaceError)


def event_payload(event: TaskEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "task_id": str(event.task_id),
        "type": event.kind,
        "from_status": event.from_status,
        "status": event.to_status,
        "message": event.message,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }


def _events_after(task_id: str, last_id: int) -> tuple[list[dict[str, Any]], str | None]:
    events = [event_payload(e) for e in TaskEvent.objects.filter(task_id=task_id, id__gt=last_id).order_by("id")]
    status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
    return events, status


async def feed(
    task_id: str, last_id: int = 0, heartbeat: float = HEARTBEAT_SECONDS, outage: float = OUTAGE_SECONDS
) -> AsyncIterator[dict[str, Any]]:
    """Yield event payloads, or ``{"type": "heartbeat"}`` when idle; stop after the terminal event.
    Raises the database error once the database has been unreachable for ``outage`` seconds."""
    quiet_since = time.monotonic()
    away_since: float | None = None
    while True:
        try:
            events, status = await database_sync_to_async(_events_after)(task_id, last_id)
            away_since = None
        except DATABASE_ERRORS:
            away_since = time.monotonic() if away_since is None else away_since
            if time.monotonic() - away_since >= outage:
                raise
        else:
            for event in events:
                last_id = event["id"]
                yield event
            if events:
                quiet_since = time.monotonic()
            if status is None or (status in states.TERMINAL and not events):
                return
        if time.monotonic() - quiet_since >= heartbeat:
            quiet_since = time.monotonic()
            yield {"type": "heartbeat"}
        await asyncio.sleep(POLL_SECONDS if away_since is None else OUTAGE_RETRY_SECONDS)
