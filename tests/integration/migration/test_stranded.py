"""Which waiting tasks a mode leaves without a consumed copy, and the copy each gets, on real
PostgreSQL (the rows are made by hand: no broker holds their copies)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from migration import state, stranded
from migration.models import MigrationState, QueueMessage
from tasks.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def waiting(published_to: str, status: str = "queued", pg_copy: bool = False) -> str:
    task = Task.objects.create(task_type="noop", status=status, published_to=published_to)
    if pg_copy:
        QueueMessage.objects.create(
            queue=task.queue, payload="{}", visible_at=0.0, created_at=0.0, message_id=str(task.pk)
        )
    return str(task.pk)


def pg_copies() -> Counter[str]:
    return Counter(QueueMessage.objects.values_list("message_id", flat=True))


def stored_mode(mode: str) -> None:
    """The state as another process stored it: no switch runs in this one."""
    state.bootstrap()  # the state row exists
    MigrationState.objects.filter(pk=1).update(mode=mode)
    state.forget()


def test_only_tasks_whose_copies_all_sit_in_unconsumed_brokers_get_a_postgresql_copy(switch_mode: Any) -> None:
    stored_mode("dual_write")  # consumes PostgreSQL and RabbitMQ
    in_kafka = waiting("kafka")
    in_kafka_and_postgresql = waiting("kafka", pg_copy=True)  # e.g. a fallback copy
    shadow_taken = waiting("postgresql+rabbitmq")  # its RabbitMQ copy is still consumed
    ended = waiting("kafka", status="completed")

    assert stranded.reenqueue() == 1
    assert pg_copies() == {in_kafka: 1, in_kafka_and_postgresql: 1}
    assert stranded.reenqueue() == 0  # a second sweep finds the copy it made

    stored_mode("legacy")  # nothing but PostgreSQL is consumed now
    assert stranded.reenqueue() == 1
    assert pg_copies() == {in_kafka: 1, in_kafka_and_postgresql: 1, shadow_taken: 1}
    assert ended not in pg_copies()
