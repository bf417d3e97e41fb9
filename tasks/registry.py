"""Task types are plain functions registered with :func:`task_type`.

A handler receives a :class:`TaskContext` and the task's payload (a dict) and returns a
JSON-serialisable result. Raising :class:`~tasks.exceptions.PermanentTaskFailure` fails the
task at once; any other exception is retried with backoff until ``max_retries`` is spent.

A deployment's own types live in its own modules, named in ``tasks.modules``: every process
(API and workers) imports them at start-up, so both know the same types.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from helixagent.config import ConfigError
from tasks.exceptions import UnknownTaskType


class TaskContext(Protocol):
    """What a running handler may ask of the runner."""

    task_id: str
    attempt: int

    def progress(self, percent: int, message: str = "") -> None:
        """Record progress (0-100); it becomes a task event."""

    def cancelled(self) -> bool:
        """Whether an operator cancelled the task; long handlers should stop when true."""


Handler = Callable[[TaskContext, dict[str, Any]], Any]


@dataclass(frozen=True)
class TaskType:
    name: str
    handler: Handler
    description: str


_REGISTRY: dict[str, TaskType] = {}


def task_type(name: str, *aliases: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` under ``name`` (and ``aliases``)."""

    def register(handler: Handler) -> Handler:
        doc = (handler.__doc__ or "").strip().splitlines()
        for key in (name, *aliases):
            if key in _REGISTRY:
                raise ValueError(f"task type {key!r} is registered twice")
            _REGISTRY[key] = TaskType(key, handler, doc[0] if doc else "")
        return handler

    return register


def get_task_type(name: str) -> TaskType:
    """The registered type ``name`` or :class:`UnknownTaskType` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskType(
            f"unknown task_type {name!r}", {"task_type": f"must be one of: {', '.join(sorted(_REGISTRY))}"}
        ) from None


def registered_types() -> list[TaskType]:
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


def import_modules(names: Iterable[str]) -> None:
    """Import the modules that register a deployment's own task types (``tasks.modules``); one
    that cannot be imported stops start-up with a :class:`ConfigError` naming it."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"tasks.modules: cannot import {name!r}: {exc}") from exc
