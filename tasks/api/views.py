"""The task endpoints of SPEC §6 and ``/health``."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connection
from django.db.models import Count
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, pagination, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from helixagent.config import get_config
from migration import modes, preflight, state
from migration import status as migration_status
from migration.models import QueueMessage
from tasks import service, states
from tasks.api.errors import RETRY_AFTER_SECONDS
from tasks.api.serializers import (
    ErrorSerializer,
    TaskAcceptedSerializer,
    TaskCreateSerializer,
    TaskSerializer,
    TaskStatusSerializer,
)
from tasks.models import IDEMPOTENCY_KEY_LENGTH, Task

FILTERS = ("status", "task_type", "priority", "queue", "correlation_id", "parent_task_id")
ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 404: ErrorSerializer, 503: ErrorSerializer}


class TaskCursor(pagination.CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        """DRF's cursor, refused like an undecodable one when its position is not a time: a
        cursor is opaque to clients, but one edited by hand would otherwise reach the query."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                position = parse_datetime(cursor.position)
            except ValueError:
                position = None
            if position is None:
                raise NotFound(self.invalid_cursor_message)
        return cursor


class TaskListCreateView(generics.ListAPIView):
    serializer_class = TaskSerializer
    pagination_class = TaskCursor

    def get_queryset(self) -> Any:
        queryset = Task.objects.all()
        for name in FILTERS:
            value = self.request.query_params.get(name)
            if not value:
                continue
            if name == "status" and value not in states.STATUSES:
                raise ValidationError({"status": f"must be one of {list(states.STATUSES)}"})
            if name == "parent_task_id":
                try:
                    uuid.UUID(value)
                except ValueError:
                    raise ValidationError({"parent_task_id": "must be a UUID"}) from None
            queryset = queryset.filter(**{name: value})
        return queryset

    @extend_schema(
        parameters=[OpenApiParameter(name, str, description=f"filter on {name}") for name in FILTERS],
        responses={200: TaskSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=TaskCreateSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, description="repeat-safe key")],
        responses={202: TaskAcceptedSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        body = TaskCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        if key and len(key) > IDEMPOTENCY_KEY_LENGTH:
            raise ValidationError({"Idempotency-Key": f"at most {IDEMPOTENCY_KEY_LENGTH} characters"})
        task, created = service.submit(body.validated_data, key)
        message = "task accepted" if created else "task already accepted under this Idempotency-Key"
        return Response(
            TaskAcceptedSerializer(task, context={"message": message}).data, status=status.HTTP_202_ACCEPTED
        )


class TaskDetailView(APIView):
    @extend_schema(responses={200: TaskSerializer, **ERRORS})
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskSerializer(service.get(task_id)).data)


class TaskStatusView(APIView):
    @extend_schema(responses={200: TaskStatusSerializer, **ERRORS})
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskStatusSerializer(service.get(task_id)).data)


class TaskCancelView(APIView):
    @extend_schema(request=None, responses={200: TaskSerializer, 409: ErrorSerializer, **ERRORS})
    def post(self, request: Request, task_id: str) -> Response:
        return Response(TaskSerializer(service.cancel(task_id)).data)


class HealthView(APIView):
    """Liveness of the database and the queue the active mode needs; 503 when one is down."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "database": "ok"}
        snapshot = state.current()
        queue: dict[str, Any] = {"mode": snapshot.mode, "brokers": {"postgresql": "ok"}}
        try:
            connection.ensure_connection()
            counts = dict(
                Task.objects.filter(status__in=[states.PENDING, states.QUEUED, states.RUNNING])
                .values_list("status")
                .annotate(n=Count("id"))
            )
            depths = (
                QueueMessage.objects.filter(queue__startswith="helixagent.")
                .values_list("queue")
                .annotate(n=Count("id"))
            )
            queue["queue_depths"] = dict(depths)
            queue["pending"] = counts.get(states.PENDING, 0) + counts.get(states.QUEUED, 0)
            queue["running"] = counts.get(states.RUNNING, 0)
        except Exception as exc:  # any failure to reach the database makes the service unhealthy
            body.update(status="unavailable", database=f"error: {exc.__class__.__name__}")
            queue["brokers"]["postgresql"] = "down"
            body["task_queue"] = queue
            return Response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        for broker in modes.required_brokers(snapshot.mode, snapshot.broker):
            error = preflight.reach(broker, get_config())
            queue["brokers"][broker] = "ok" if error is None else "down"
            if error is not None:
                body["status"] = "unavailable"
        if snapshot.mode == modes.MESSAGING and body["status"] == "ok":
            queue["queue_depths"] = {q: n for q, n in migration_status.broker_depths(snapshot.broker).items() if n}
        body["task_queue"] = queue
        if body["status"] != "ok":
            return Response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return Response(body)
