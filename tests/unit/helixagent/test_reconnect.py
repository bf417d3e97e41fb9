"""The worker's schedule of broker reconnection attempts (helixagent.reconnect)."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.exceptions import OperationalError
from kombu.utils import functional

from helixagent.celery import app
from helixagent.reconnect import Connection
from tests.conftest import free_port


def test_the_apps_broker_connections_retry_after_1_2_3_4_then_every_5_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(functional, "sleep", lambda _seconds: None)  # the schedule, not the waiting
    assert isinstance(app.connection_for_read(), Connection)
    dead = f"postgresql://helixagent:helixagent@127.0.0.1:{free_port()}/helixagent"
    waits: list[float] = []

    def record(_exc: Exception, interval: float) -> None:
        waits.append(interval)

    conn = Connection("pgqueue://", transport_options={"dsn": dead})
    with pytest.raises(OperationalError):  # once the attempts run out
        conn.ensure_connection(record, 7)
    assert waits == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]


def test_a_caller_that_names_its_schedule_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(functional, "sleep", lambda _seconds: None)
    dead = f"postgresql://helixagent:helixagent@127.0.0.1:{free_port()}/helixagent"
    waits: list[Any] = []
    conn = Connection("pgqueue://", transport_options={"dsn": dead})
    with pytest.raises(OperationalError):
        conn.ensure_connection(lambda _exc, interval: waits.append(interval), 3, interval_start=0.5, interval_step=0)
    assert waits == [0.5, 0.5, 0.5]
