"""The worker's signal handlers in :mod:`tasks.runner`."""

from __future__ import annotations

import threading

import pytest
from celery.signals import worker_shutting_down

from migration.pgqueue import transport as pgqueue
from tasks import runner  # noqa: F401  (connects the worker's signal handlers)


def test_a_shutdown_signal_stops_the_queue_from_delivering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgqueue, "stopping", threading.Event())
    worker_shutting_down.send(sender="w1@host", sig="SIGTERM", how="Warm", exitcode=0)
    assert pgqueue.stopping.is_set()
