"""Kafka restarts under load in messaging mode: the worker and the submitting process reconnect
by themselves, nothing is lost, and every task completes once."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tasks.models import Task
from tests.acceptance.helpers import completed_once, submit, wait_completed
from tests.conftest import ROOT, ModeSetting, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def restart_kafka() -> None:
    result = subprocess.run(
        ["scripts/services.sh", "restart-kafka"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_kafka_restart_under_load_loses_nothing(api: Any, start_worker: Any, switch_mode: Any) -> None:
    setting = ModeSetting("messaging", broker="kafka")
    switch_mode(setting)
    start_worker("w1", **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.2}) for _ in range(300)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    restart_kafka()
    assert Task.objects.filter(pk__in=first, status="completed").count() < len(first), "no load left at the restart"
    later = [submit(api, "noop") for _ in range(50)]
    wait_completed(first + later, timeout=120)
    completed_once(first + later)
