"""Legacy mode end to end: API → PostgreSQL queue → real Celery worker → task row and events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from helixagent.config import get_config
from migration.models import QueueMessage
from tasks.models import Task, TaskEvent
from tests.conftest import wait_for
from tests.helpers import celery, completed_once, event_path, submit, wait_completed, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_posted_task_runs_to_completion_and_leaves_no_message(api: Any, start_worker: Any) -> None:
    start_worker()
    task_id = submit(api, "echo", {"hello": "world"})
    task = wait_status(task_id, "completed")
    assert task.result == {"hello": "world"}
    assert task.dispatch_source == "postgresql" and task.worker_id.startswith("w1@")
    assert event_path(task_id) == ["pending", "queued", "running", "completed"]
    wait_for(lambda: not QueueMessage.objects.filter(queue__startswith="helixagent.tasks").exists(), 5, what="ack")


def test_tasks_whose_queue_was_emptied_by_celery_purge_complete_once(
    api: Any, start_worker: Any, live_db_url: str, tmp_path: Path
) -> None:
    """``celery purge`` deletes the only copies of ten waiting tasks: a worker finds them
    ``queued`` with no message and gives each a copy again. Purging drops no task."""
    waited = [submit(api, "noop") for _ in range(10)]
    purged = celery(live_db_url, tmp_path, "purge", "-f")
    assert "Purged 10 messages" in purged, purged
    worker = start_worker("w1", HELIX_LOST_COPY_INTERVAL="1")
    wait_completed(waited, timeout=60)
    completed_once(waited)
    assert "migration.lost_copies_reenqueued" in worker.log_path.read_text()


def test_a_failing_task_is_retried_with_backoff_and_then_succeeds(api: Any, start_worker: Any) -> None:
    start_worker()
    task_id = submit(api, "fail", {"times": 1}, config={"retry_delay_seconds": 0.2})
    task = wait_status(task_id, "completed")
    assert task.retry_count == 1 and "drill failure" in task.last_error
    assert event_path(task_id) == ["pending", "queued", "running", "pending", "queued", "running", "completed"]


def test_exhausted_retries_end_in_dead_letter(api: Any, start_worker: Any) -> None:
    start_worker()
    task_id = submit(api, "fail", {}, config={"max_retries": 2, "retry_delay_seconds": 0.1})
    task = wait_status(task_id, "dead_letter")
    assert task.retry_count == 2
    assert event_path(task_id).count("running") == 3


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_task_over_its_timeout_is_stopped_and_retried_on_either_pool(api: Any, start_worker: Any, pool: str) -> None:
    # Celery enforces time limits in prefork pool processes only; on threads the runner does
    start_worker(pool=pool, concurrency=2)
    task_id = submit(api, "sleep", {"seconds": 30}, config={"timeout_seconds": 1, "max_retries": 1})
    task = wait_status(task_id, "completed", "failed", "dead_letter", timeout=30)
    assert (task.status, task.last_error) == ("dead_letter", "timed out after 1.0s")
    assert event_path(task_id).count("running") == 2
    assert task.completed_at - task.started_at < timedelta(seconds=10)  # the retry's own run, not 30 s


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_task_without_a_timeout_of_its_own_gets_the_default(
    api: Any, start_worker: Any, pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIX_DEFAULT_TIMEOUT", "1")  # the worker's, and this process's: its submit
    get_config.cache_clear()  # puts the limit in the message, where the prefork pool reads it
    try:
        start_worker(pool=pool, concurrency=2)
        task_id = submit(api, "sleep", {"seconds": 30}, config={"max_retries": 0})
        task = wait_status(task_id, "completed", "failed", "dead_letter", timeout=30)
        assert (task.status, task.last_error) == ("dead_letter", "timed out after 1.0s")
    finally:
        monkeypatch.delenv("HELIX_DEFAULT_TIMEOUT")
        get_config.cache_clear()


def test_a_permanent_failure_is_not_retried(api: Any, start_worker: Any) -> None:
    start_worker()
    task_id = submit(api, "notify", {"to": "not-an-address"})
    task = wait_status(task_id, "failed")
    assert task.retry_count == 0 and "payload.to" in task.last_error


def test_a_scheduled_task_starts_when_it_is_due(api: Any, start_worker: Any) -> None:
    start_worker()
    due = timezone.now() + timedelta(seconds=2)
    task_id = submit(api, "noop", scheduled_at=due.isoformat())
    assert Task.objects.get(pk=task_id).status == "pending"
    task = wait_status(task_id, "completed")
    assert task.started_at is not None and task.started_at >= due


def test_progress_and_cancel_of_a_running_task(api: Any, start_worker: Any) -> None:
    start_worker()
    task_id = submit(api, "sleep", {"seconds": 20})
    wait_for(lambda: TaskEvent.objects.filter(task_id=task_id, kind="progress").exists(), 10, what="progress event")
    response = api.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    task = wait_status(task_id, "cancelled")
    assert task.result is None
    assert event_path(task_id)[-1] == "cancelled"


def test_the_notify_type_sends_an_email(api: Any, start_worker: Any, tmp_path: Any) -> None:
    start_worker(DJANGO_EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", HELIX_VAR_DIR=str(tmp_path))
    task_id = submit(api, "notify", {"to": ["ops@example.com"], "subject": "deploy done", "body": "all green"})
    task = wait_status(task_id, "completed")
    assert task.result == {"sent": 1, "to": ["ops@example.com"]}
    mails = list((tmp_path / "mail").glob("*.log"))
    assert mails and "deploy done" in mails[0].read_text()


def test_a_dead_lettered_task_can_be_redriven_from_the_admin(api: Any, start_worker: Any, admin_client: Any) -> None:
    start_worker()
    task_id = submit(api, "fail", {}, config={"max_retries": 0})
    wait_status(task_id, "dead_letter")
    response = admin_client.post(
        "/django-admin/tasks/task/", {"action": "redrive", "_selected_action": [task_id]}, follow=True
    )
    assert response.status_code == 200
    wait_for(lambda: event_path(task_id).count("running") == 2, 15, what="second execution")
    wait_status(task_id, "dead_letter")
    assert event_path(task_id)[-5:] == ["dead_letter", "pending", "queued", "running", "dead_letter"]
