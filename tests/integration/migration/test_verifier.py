"""The verifier's judgement of missing copies, on real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from helixagent.config import get_config
from migration import verifier
from migration.models import Discrepancy, ModeChange
from tasks.models import Task
from tests.conftest import ModeSetting

pytestmark = pytest.mark.django_db(transaction=True)


def ran_from_postgresql(created_at: datetime, started_at: datetime) -> Task:
    """A dual_write task run by its PostgreSQL copy whose RabbitMQ shadow has not been checked."""
    task = Task.objects.create(
        task_type="noop",
        status="completed",
        published_to="postgresql+rabbitmq",
        dispatch_source="postgresql",
        started_at=started_at,
    )
    Task.objects.filter(pk=task.pk).update(created_at=created_at)
    return task


def test_a_shadow_is_missing_only_once_its_task_ran_longer_ago_than_the_timeout(switch_mode: Any) -> None:
    switch_mode(ModeSetting("dual_write", 0))
    timeout = timedelta(seconds=get_config().migration.dual_write_timeout)
    now = timezone.now()
    long_ago = ran_from_postgresql(created_at=now - 3 * timeout, started_at=now - 2 * timeout)
    # published long ago, run just now (a worker that was away takes both copies at once)
    just_now = ran_from_postgresql(created_at=now - 3 * timeout, started_at=now)

    verifier.verify_due()

    found = list(Discrepancy.objects.values_list("kind", "task_id", "leg"))
    assert found == [("missing_copy", str(long_ago.pk), "rabbitmq")]
    assert Task.objects.get(pk=just_now.pk).verified_at is None  # judged again on a later pass


def test_a_lost_runner_copy_is_the_one_the_split_chose_when_the_task_was_published(switch_mode: Any) -> None:
    switch_mode(ModeSetting("dual_write", 100))  # every task published now runs from RabbitMQ
    timeout = timedelta(seconds=get_config().migration.dual_write_timeout)
    now = timezone.now()
    ModeChange.objects.update(changed_at=now - 4 * timeout)
    task = Task.objects.create(task_type="noop", status="queued", published_to="postgresql+rabbitmq")
    Task.objects.filter(pk=task.pk).update(created_at=now - 3 * timeout, updated_at=now - 3 * timeout)
    switch_mode(ModeSetting("dual_write", 0))  # the split moved after the publish: now PostgreSQL runs all

    verifier.verify_due()

    found = list(Discrepancy.objects.values_list("kind", "task_id", "leg"))
    assert found == [("missing_copy", str(task.pk), "rabbitmq")]


def test_a_copy_naming_an_id_longer_than_the_column_is_recorded_cut_to_fit() -> None:
    assert verifier.record("orphan_copy", "x" * 300, "rabbitmq", "a shadow copy without a task row")
    assert list(Discrepancy.objects.values_list("task_id", flat=True)) == ["x" * 64]
    assert not verifier.record("orphan_copy", "x" * 300, "rabbitmq")  # the same one, once
