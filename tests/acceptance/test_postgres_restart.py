"""PostgreSQL restarts, or crashes and recovers, under load: workers reconnect by themselves,
nothing is lost, and every task completes once. PostgreSQL holds the task rows in every mode, so
the restart is also made in dual_write and messaging, where a worker holding a broker message
cannot claim its row until the database is back.

A crash loses the WAL that was not yet written: claims, queue leases and acks of the last moments
(they do not wait for the flush), never a submit or an outcome."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from django.db import connection

from tasks.models import Task
from tests.conftest import ROOT, ModeSetting, purge_rabbitmq, wait_for
from tests.helpers import completed_once, submit, wait_completed

pytestmark = pytest.mark.django_db(transaction=True)


def restart_postgres(how: str) -> None:
    result = subprocess.run(["scripts/services.sh", how], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    connection.close()  # this process's connection died with the server


@pytest.mark.parametrize(
    ("setting", "how"),
    [
        (ModeSetting("legacy"), "restart-postgres"),
        (ModeSetting("legacy"), "crash-postgres"),
        (ModeSetting("dual_write", 50), "restart-postgres"),
        (ModeSetting("messaging", broker="rabbitmq"), "restart-postgres"),
        (ModeSetting("messaging", broker="kafka"), "restart-postgres"),
    ],
    ids=lambda value: value.id if isinstance(value, ModeSetting) else value,
)
def test_workers_reconnect_after_a_restart_and_every_task_completes_once(
    api: Any, start_worker: Any, switch_mode: Any, setting: ModeSetting, how: str
) -> None:
    purge_rabbitmq()
    switch_mode(setting)
    start_worker("w1", concurrency=4, **setting.env)
    first = [submit(api, "sleep", {"seconds": 0.05}) for _ in range(200)]
    wait_for(lambda: Task.objects.filter(status="completed").count() >= 20, 60, what="work under way")
    restart_postgres(how)
    later = [submit(api, "noop") for _ in range(50)]
    # throughput is back within 10 s of the restart: new tasks complete again
    wait_for(lambda: Task.objects.filter(pk__in=later, status="completed").exists(), 10, 0.2, what="work resumed")
    wait_completed(first + later, timeout=120)
    completed_once(first + later)
