"""The mode rules of SPEC §4, without services."""

from __future__ import annotations

import uuid

import pytest

from migration import modes


@pytest.mark.parametrize(
    ("current", "target", "force"),
    [
        ("legacy", "dual_write", False),
        ("dual_write", "messaging", False),
        ("messaging", "dual_write", False),
        ("messaging", "legacy", False),
        ("dual_write", "legacy", False),
        ("legacy", "messaging", True),
        ("legacy", "legacy", False),
    ],
)
def test_allowed_transitions(current: str, target: str, force: bool) -> None:
    modes.check_transition(current, target, force)


def test_legacy_to_messaging_needs_force_and_unknown_modes_are_refused() -> None:
    with pytest.raises(modes.TransitionRefused, match="force"):
        modes.check_transition("legacy", "messaging")
    with pytest.raises(modes.TransitionRefused, match="unknown mode"):
        modes.check_transition("legacy", "sideways", force=True)


def test_where_each_mode_publishes_and_consumes() -> None:
    assert modes.publish_legs("legacy", "rabbitmq") == ("postgresql",)
    assert modes.publish_legs("dual_write", "kafka") == ("postgresql", "rabbitmq")
    assert modes.publish_legs("messaging", "kafka") == ("kafka",)
    assert modes.consume_legs("messaging", "rabbitmq") == ("postgresql", "rabbitmq")
    assert modes.required_brokers("legacy", "rabbitmq") == ()
    assert modes.required_brokers("messaging", "kafka") == ("kafka",)


def test_the_bucket_is_stable_and_the_split_follows_the_percentage() -> None:
    task_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert modes.bucket(task_id) == modes.bucket(task_id.upper())
    ids = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(10_000)]
    share = sum(modes.executing_source(i, 30) == "rabbitmq" for i in ids) / len(ids)
    assert 0.28 <= share <= 0.32
    assert all(modes.executing_source(i, 0) == "postgresql" for i in ids[:100])
    assert all(modes.executing_source(i, 100) == "rabbitmq" for i in ids[:100])


def test_only_dual_copies_in_dual_write_obey_the_split() -> None:
    task_id = next(str(uuid.UUID(int=n)) for n in range(1000) if modes.bucket(str(uuid.UUID(int=n))) < 50)
    assert modes.runs_here("rabbitmq", "dual", "dual_write", task_id, 50)
    assert not modes.runs_here("postgresql", "dual", "dual_write", task_id, 50)
    assert modes.runs_here("postgresql", "sole", "dual_write", task_id, 50)  # a fallback copy
    assert modes.runs_here("postgresql", "dual", "messaging", task_id, 50)  # left over from dual_write


def test_dual_copies_follow_the_split_they_were_published_with() -> None:
    task_id = next(str(uuid.UUID(int=n)) for n in range(1000) if modes.bucket(str(uuid.UUID(int=n))) < 50)
    # published at 0 %: the PostgreSQL copy runs it, whatever the split is when a copy arrives
    assert modes.runs_here("postgresql", "dual", "dual_write", task_id, 50, runner="postgresql")
    assert not modes.runs_here("rabbitmq", "dual", "dual_write", task_id, 50, runner="postgresql")


def test_the_payload_checksum_ignores_key_order() -> None:
    assert modes.payload_checksum({"a": 1, "b": [1, 2]}) == modes.payload_checksum({"b": [1, 2], "a": 1})
    assert modes.payload_checksum({"a": 1}) != modes.payload_checksum({"a": 2})
