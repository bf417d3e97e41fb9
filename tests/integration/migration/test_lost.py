"""Tasks whose only copy a broker lost, found by the depth of their queue on real RabbitMQ and
PostgreSQL (the rows are made by hand; the queue holds what the test puts in it)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from kombu import Connection

from migration import lost
from migration.models import QueueMessage
from tasks import service
from tasks.models import Task
from tests.conftest import ModeSetting, purge_rabbitmq, require_env

pytestmark = pytest.mark.django_db(transaction=True)
QUEUE = "helixagent.tasks.background"


@pytest.fixture(autouse=True)
def fresh_sightings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lost, "_sightings", lost.Sightings())
    monkeypatch.setattr(lost, "HELD_REPLY_TIMEOUT", 0.2)  # no worker runs here to answer


def waiting(published_to: str, status: str = "queued", queue: str = QUEUE) -> str:
    return str(Task.objects.create(task_type="noop", status=status, published_to=published_to, queue=queue).pk)


def pg_copies() -> Counter[str]:
    return Counter(QueueMessage.objects.values_list("message_id", flat=True))


def test_a_waiting_task_gets_a_postgresql_copy_once_its_queue_was_seen_empty(switch_mode: Any) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("messaging", broker="rabbitmq"))
    gone = waiting("rabbitmq")  # its copy was purged
    other_queue = waiting("rabbitmq", queue="helixagent.tasks.llm")  # that queue holds a message
    waiting("postgresql+rabbitmq")  # dual_write: its verifier reports a missing copy
    waiting("rabbitmq", status="completed")
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        conn.Producer().publish({}, exchange="helixagent.tasks", routing_key="helixagent.tasks.llm")

    assert lost.reenqueue() == 0  # the first look: nothing was seen empty before it
    published_after_it = waiting("rabbitmq")
    assert lost.reenqueue() == 1
    assert pg_copies() == {gone: 1}
    assert lost.reenqueue() == 1  # the second look saw the queue empty too
    assert pg_copies() == {gone: 1, published_after_it: 1}
    assert lost.reenqueue() == 0  # each has its copy now

    purge_rabbitmq()
    lost.reenqueue()
    assert lost.reenqueue() == 1
    assert pg_copies() == {gone: 1, published_after_it: 1, other_queue: 1}


def test_nothing_is_looked_at_outside_messaging_mode(switch_mode: Any) -> None:
    purge_rabbitmq()
    switch_mode(ModeSetting("dual_write", 100))
    waiting("rabbitmq")
    assert lost.reenqueue() == 0
    assert lost.reenqueue() == 0
    assert not pg_copies()


@pytest.mark.parametrize(
    "mode", [ModeSetting("legacy"), ModeSetting("messaging", broker="rabbitmq")], ids=lambda s: s.id
)
def test_a_task_whose_postgresql_copy_is_gone_gets_another(switch_mode: Any, mode: ModeSetting) -> None:
    switch_mode(mode)
    past = timezone.now() - lost.POSTGRESQL_GRACE - timedelta(seconds=1)
    purged = waiting("postgresql")
    copied = waiting("postgresql")
    service.reenqueue([copied])  # its message is in the queue
    both = waiting("postgresql+rabbitmq")  # dual_write: the verifier's
    ended = waiting("postgresql", status="completed")
    Task.objects.filter(pk__in=[purged, copied, both, ended]).update(updated_at=past)
    just_queued = waiting("postgresql")  # within the grace

    assert lost.restore_postgresql_copies() == 1
    assert pg_copies() == {purged: 1, copied: 1}
    assert lost.restore_postgresql_copies() == 0
    assert just_queued not in pg_copies()
