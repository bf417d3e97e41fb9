"""``GET /health`` with RabbitMQ stopped: 503 with a retry hint exactly when the active mode needs
RabbitMQ (SPEC §6), on a real PostgreSQL and a really stopped RabbitMQ."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ModeSetting

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("setting", "needs_rabbitmq"),
    [
        (ModeSetting("legacy"), False),
        (ModeSetting("dual_write", 50), True),
        (ModeSetting("messaging", broker="rabbitmq"), True),
        (ModeSetting("messaging", broker="kafka"), False),
    ],
    ids=lambda value: value.id if isinstance(value, ModeSetting) else None,
)
def test_health_is_503_when_the_mode_needs_the_stopped_broker(
    api: Any, switch_mode: Any, request: pytest.FixtureRequest, setting: ModeSetting, needs_rabbitmq: bool
) -> None:
    switch_mode(setting)  # its preflight check needs RabbitMQ up
    request.getfixturevalue("rabbitmq_stopped")
    response = api.get("/health")
    body = response.json()
    assert body["database"] == "ok" and body["task_queue"]["mode"] == setting.mode
    if needs_rabbitmq:
        assert response.status_code == 503
        assert int(response["Retry-After"]) > 0
        assert body["status"] == "unavailable" and body["task_queue"]["brokers"]["rabbitmq"] == "down"
    else:
        assert response.status_code == 200 and body["status"] == "ok"
        assert "rabbitmq" not in body["task_queue"]["brokers"]
