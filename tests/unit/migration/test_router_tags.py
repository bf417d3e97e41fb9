"""Delivery tags of the router: PostgreSQL tags stay as the queue transport makes them."""

from __future__ import annotations

from migration.router import is_task_queue, leg_tag, split_tag


def test_broker_tags_carry_leg_and_connection_generation() -> None:
    assert split_tag(leg_tag("kafka", 3, "5:120")) == ("kafka", 3, "5:120")
    assert split_tag(leg_tag("rabbitmq", 1, "42")) == ("rabbitmq", 1, "42")
    assert split_tag("17.2") is None


def test_only_task_queues_are_routed() -> None:
    assert is_task_queue("helixagent.tasks.background")
    assert not is_task_queue("celeryev.1234")
    assert not is_task_queue("celery@host.celery.pidbox")
