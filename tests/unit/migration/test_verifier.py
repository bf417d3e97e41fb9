"""Comparing a copy's headers with its task row, without services."""

from __future__ import annotations

from migration import modes
from migration.verifier import problem


def headers(task_type: str, payload: object) -> dict[str, str]:
    return {modes.TYPE_HEADER: task_type, modes.CHECKSUM_HEADER: modes.payload_checksum(payload)}


def test_a_faithful_copy_has_no_problem_whatever_the_key_order() -> None:
    assert problem("echo", '{"b": 2, "a": 1}', headers("echo", {"a": 1, "b": 2})) == ""


def test_a_different_type_or_payload_is_named() -> None:
    assert "task type" in problem("noop", {}, headers("echo", {}))
    assert "payload" in problem("echo", {"a": 2}, headers("echo", {"a": 1}))


def test_a_copy_without_headers_is_not_judged() -> None:
    assert problem("echo", {"a": 1}, {}) == ""
