"""Domain errors of the migration app; :mod:`tasks.api.errors` maps each to HTTP status and JSON."""

from __future__ import annotations


class MigrationError(Exception):
    """A refused migration change. ``code`` is stable; ``details`` names fields or brokers."""

    code = "invalid_transition"
    status = 409

    def __init__(self, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BrokerUnreachable(MigrationError):
    """The switch needs a broker the preflight check could not reach."""

    code = "broker_unavailable"


class InvalidValue(MigrationError):
    code = "validation_error"
    status = 400
