"""The worker's signal handlers in :mod:`tasks.runner`."""

from __future__ import annotations

import select
import threading

import pytest
from celery.signals import worker_shutting_down

from migration.pgqueue import transport as pgqueue
from migration.pgqueue.bell import Bell
from tasks import runner  # noqa: F401  (connects the worker's signal handlers)


def test_a_shutdown_signal_stops_the_queue_and_wakes_its_waiting_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgqueue, "stopping", threading.Event())
    bell = Bell()  # the bell of a consuming loop, unarmed: its window has room, it waits for work
    worker_shutting_down.send(sender="w1@host", sig="SIGTERM", how="Warm", exitcode=0)
    assert pgqueue.stopping.is_set()
    assert select.select([bell.fileno()], [], [], 0)[0]
    bell.close()
