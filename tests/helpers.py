"""Helpers the integration and acceptance tests share: submit tasks, wait on the task table, call
a served API, run the ``celery`` command."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

from django.db import connections
from django.db.models import Count

from tasks import service, states
from tasks.models import Task, TaskEvent
from tests.conftest import ROOT, process_env, wait_for


def celery(live_db_url: str, tmp_path: Path, *args: str, **env: str) -> str:
    """Run ``celery -A helixagent ARGS`` as an operator would; return what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "helixagent", *args],
        cwd=ROOT,
        env=process_env(live_db_url, tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout + result.stderr


def http_call(url: str, key: str, body: bytes | None = None) -> tuple[int, Message, dict[str, Any]]:
    """One request to a served API (POST when there is a ``body``): status, headers (looked up
    without regard to case, as HTTP names them) and JSON body. A server that does not answer
    within 15 s fails the test (``TimeoutError``)."""
    request = urllib.request.Request(
        url, data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.load(error)


def submit(api: Any, task_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> str:
    response = api.post("/v1/tasks", {"task_type": task_type, "payload": payload or {}, **fields}, format="json")
    assert response.status_code == 202, response.content
    return str(response.json()["id"])


def wait_status(task_id: str, *wanted: str, timeout: float = 30.0) -> Task:
    wanted = wanted or tuple(states.TERMINAL)
    return wait_for(
        lambda: Task.objects.filter(pk=task_id, status__in=wanted).first(), timeout, what=f"task {task_id} in {wanted}"
    )


def wait_completed(ids: list[str], timeout: float) -> None:
    """Wait until every task in ``ids`` has completed."""
    wait_for(
        lambda: Task.objects.filter(pk__in=ids, status="completed").count() == len(ids),
        timeout,
        0.5,
        what=f"all {len(ids)} tasks completed",
    )


def completed_once(ids: list[str]) -> None:
    """Every task in ``ids`` completed, and exactly once."""
    completions = Counter(
        dict(TaskEvent.objects.filter(to_status="completed").values_list("task_id").annotate(n=Count("id")))
    )
    assert {str(k) for k in completions} >= set(ids)
    assert {completions[uuid.UUID(i)] for i in ids} == {1}


def run_from(ids: list[str]) -> set[str]:
    """Where the tasks in ``ids`` ran from: the sources of the copies that executed them."""
    return set(Task.objects.filter(pk__in=ids).values_list("dispatch_source", flat=True))


def event_path(task_id: str) -> list[str]:
    return list(
        TaskEvent.objects.filter(task_id=task_id, kind="transition").order_by("id").values_list("to_status", flat=True)
    )


def submit_many(count: int, task_type: str = "noop", threads: int = 4) -> list[str]:
    """Submit ``count`` tasks through the service from a few threads, each on its own connection."""

    def chunk(size: int) -> list[str]:
        try:
            return [str(service.submit({"task_type": task_type})[0].pk) for _ in range(size)]
        finally:
            connections.close_all()

    sizes = [count // threads + (1 if n < count % threads else 0) for n in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [task_id for ids in pool.map(chunk, sizes) for task_id in ids]
