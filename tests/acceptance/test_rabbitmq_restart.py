"""RabbitMQ restarts under load in messaging mode: the worker's consumer and the submitting
process reconnect by themselves, the messages the worker held unacknowledged come back and run
at most once more (the claim skips those already done), and every task completes once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tasks.models import Task
from tests.acceptance.helpers import completed_once, submit, wait_completed
from tests.conftest import ModeSetting, purge_rabbitmq, start_rabbitmq, stop_rabbitmq, wait_for

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
