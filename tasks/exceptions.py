"""Domain errors of the tasks app; :mod:`tasks.api.errors` maps each to HTTP status and JSON."""

from __future__ import annotations

from typing import Any


class TaskError(Exception):
    """Base of task domain errors. ``code`` is stable; ``details`` names fields."""

    code = "task_error"
    status = 400

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class UnknownTaskType(TaskError):
    code = "unknown_task_type"


class TaskNotFound(TaskError):
    code = "not_found"
    status = 404


class InvalidTransition(TaskError):
    code = "invalid_state"
    status = 409


class PermanentTaskFailure(Exception):
    """Raised by a handler for an error that retrying cannot fix: the task goes to ``failed``."""
