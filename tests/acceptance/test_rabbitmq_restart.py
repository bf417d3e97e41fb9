"""RabbitMQ restarts under load: the worker's consumer and the submitting process reconnect by
themselves, the messages the worker held unacknowledged come back (the claim skips those already
run), and every task completes once. In dual_write the verifier finds nothing amiss."""

from __future__ import annotations

import time
from typing import Any

import pytest

from migration.models import Discrepancy
from tasks.models import Task
from tests.acceptance.helpers import completed_once, submit, wait_completed
from tests.conftest import (
    ModeSetting,
    pg_depth,
    purge_rabbitmq,
    rabbitmq_depth,
    start_rabbitmq,
    stop_rabbitmq,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rabbitmq_restart_under_load_loses_nothing(api: Any, start_worker: Any, switch_mode: Any) -> None:
    setting = ModeSetting("messaging", broker="rabbitmq")
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.2}) for _ in range(300)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    stop_rabbitmq()
    time.sleep(2)  # long enough for the worker to notice its connection is gone
    start_rabbitmq()
    assert Task.objects.filter(pk__in=first, status="completed").count() < len(first), "no load left at the restart"
    later = [submit(api, "noop") for _ in range(50)]
    wait_completed(first + later, timeout=120)
    completed_once(first + later)
    # Published after the restart, run from RabbitMQ: both ends are connected to it again.
    assert set(Task.objects.filter(pk__in=later).values_list("dispatch_source", flat=True)) == {"rabbitmq"}


def test_a_rabbitmq_restart_in_dual_write_loses_no_copy_and_logs_no_discrepancy(
    api: Any, start_worker: Any, switch_mode: Any
) -> None:
    setting = ModeSetting("dual_write", 50)
    purge_rabbitmq()
    switch_mode(setting)
    # The timeout must outlast the backlog (about 8 s of work, and RabbitMQ away for up to 10 s),
    # or copies still waiting count as lost.
    start_worker("w1", DUAL_WRITE_TIMEOUT="25", **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.2}) for _ in range(150)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    stop_rabbitmq()
    during = [submit(api, "noop") for _ in range(20)]  # their RabbitMQ copies fall back to PostgreSQL
    start_rabbitmq()
    assert Task.objects.filter(pk__in=first, status="completed").count() < len(first), "no load left at the restart"
    later = [submit(api, "noop") for _ in range(50)]
    ids = first + during + later
    wait_completed(ids, timeout=120)
    completed_once(ids)
    dual = Task.objects.filter(pk__in=ids, published_to__contains="+")
    wait_for(lambda: not dual.filter(verified_at__isnull=True).exists(), 60, 0.5, what="every dual task verified")
    assert list(Discrepancy.objects.values_list("kind", "task_id", "leg")) == []
    assert pg_depth() == 0 and rabbitmq_depth() == 0
