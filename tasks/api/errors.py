"""One place that turns errors into ``{"error": {"code", "message", "details"}}`` responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from helixagent.logging import get_logger
from migration.exceptions import MigrationError
from tasks.exceptions import TaskError

log = get_logger("api")
RETRY_AFTER_SECONDS = 5


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def unavailable_body() -> dict[str, Any]:
    return error_body(
        "service_unavailable", "the database is unreachable; retry later", {"retry_after": RETRY_AFTER_SECONDS}
    )


def unavailable_response() -> JsonResponse:
    response = JsonResponse(unavailable_body(), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _first_message(details: Any, prefix: str = "") -> str:
    """``field: message`` of the first validation error, descending into nested fields."""
    if isinstance(details, dict):
        for key, value in details.items():
            name = key if key != "non_field_errors" else ""
            return _first_message(value, f"{prefix}.{name}" if prefix and name else prefix or name)
    if isinstance(details, list) and details:
        return _first_message(details[0], prefix)
    return f"{prefix}: {details}" if prefix else str(details)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every API error leaves in the same JSON shape."""
    if isinstance(exc, TaskError | MigrationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, OperationalError | InterfaceError):
        log.warning("api.database_unavailable", extra={"error": str(exc)})
        return Response(unavailable_body(), status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("request_too_large", "request body is too large"), status=413)
    if isinstance(exc, exceptions.ValidationError):
        return Response(error_body("validation_error", _first_message(exc.detail), exc.detail), status=400)
    if isinstance(exc, exceptions.ParseError):
        return Response(error_body("malformed_json", f"request body: {exc.detail}"), status=400)
    response = drf_exception_handler(exc, context)
    if response is not None:
        code = getattr(exc, "default_code", "error")
        response.data = error_body(code, str(getattr(exc, "detail", exc)))
    return response


class DatabaseUnavailableMiddleware:
    """Outside DRF views too (admin, health): a database outage is a 503 with a retry hint."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            log.warning("api.database_unavailable", extra={"error": str(exception), "path": request.path})
            return unavailable_response()
        return None


class NulCharacterMiddleware:
    """A query parameter holding a NUL character is a 400 on every path, admin pages included:
    PostgreSQL's text cannot hold one, so a filter on it would fail in the query (a 500)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                shown = name.replace("\x00", "\\0")
                return JsonResponse(
                    error_body("validation_error", f"{shown}: must not hold a NUL character"), status=400
                )
        return self.get_response(request)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", f"no route for {request.path}"), status=status.HTTP_404_NOT_FOUND)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("internal_error", "internal server error"), status=500)
