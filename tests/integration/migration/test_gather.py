"""Writes gathered into one statement on a real PostgreSQL: all rows commit together or none does."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction

from migration import gather
from migration.models import OutboxMessage, QueueMessage
from migration.pgqueue import sql
from tasks.models import Task, TaskEvent

pytestmark = pytest.mark.django_db(transaction=True)
QUEUE = "helixagent.tasks.background"


def outbox_insert(statement: gather.Statement, task: Task) -> str:
    return statement.add(
        "INSERT INTO helix_outbox (leg, queue, task_id, payload, created_at) VALUES (%s, %s, %s, %s, now())",
        ("rabbitmq", QUEUE, str(task.pk), "{}"),
        returning=True,
    )


def test_members_commit_together_and_after_receives_the_returned_ids() -> None:
    task = Task(task_type="noop", queue=QUEUE)
    seen: list[dict[str, Any]] = []
    with gather.gather() as statement:
        statement.insert(task)
        statement.insert(
            TaskEvent(task_id=task.pk, to_status="pending"), TaskEvent(task_id=task.pk, to_status="queued")
        )
        statement.add(sql.PG_PUT, (QUEUE, 0, "{}", 0.0, None, 0.0, str(task.pk)))
        member = outbox_insert(statement, task)
        statement.after(seen.append)
    statement.run()

    assert Task.objects.filter(pk=task.pk).exists()
    assert TaskEvent.objects.filter(task_id=task.pk).count() == 2
    assert QueueMessage.objects.filter(message_id=str(task.pk)).count() == 1
    assert seen == [{member: OutboxMessage.objects.get(task_id=str(task.pk)).pk}]


def test_a_failing_member_commits_nothing_and_runs_no_after_work() -> None:
    existing = Task.objects.create(task_type="noop", queue=QUEUE, idempotency_key="same")
    task = Task(task_type="noop", queue=QUEUE, idempotency_key="same")  # violates the unique key
    called: list[dict[str, Any]] = []
    with gather.gather() as statement:
        statement.add(sql.PG_PUT, (QUEUE, 0, "{}", 0.0, None, 0.0, str(task.pk)))
        outbox_insert(statement, task)
        statement.insert(task)
        statement.after(called.append)
    with pytest.raises(IntegrityError):
        statement.run()

    assert list(Task.objects.values_list("pk", flat=True)) == [existing.pk]
    assert not QueueMessage.objects.filter(message_id=str(task.pk)).exists()
    assert not OutboxMessage.objects.exists()
    assert called == []


def test_queue_writes_join_the_statement_only_inside_gather() -> None:
    from migration.pgqueue.store import TransactionStore

    store = TransactionStore()
    with gather.gather() as statement:
        store.put(QUEUE, 0, "{}", None, "inside")
    assert not QueueMessage.objects.filter(message_id="inside").exists()  # held, not run
    statement.run()
    store.put(QUEUE, 0, "{}", None, "outside")
    assert set(QueueMessage.objects.values_list("message_id", flat=True)) == {"inside", "outside"}


def test_a_gathered_statement_refuses_to_run_inside_a_transaction() -> None:
    with gather.gather() as statement:
        statement.insert(Task(task_type="noop", queue=QUEUE))
    with transaction.atomic(), pytest.raises(RuntimeError, match="its own transaction"):
        statement.run()
