"""The JSON admin API of the migration (SPEC §6): ``/admin/migration/*``.

Open to staff sessions (the Django admin login) and admin tokens (``create_token --admin``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from migration import migrate_pending, modes, rollback, state, status
from migration.models import Discrepancy
from tasks.api.auth import BearerTokenAuthentication
from tasks.api.errors import error_body
from tasks.api.serializers import ErrorSerializer
from tasks.models import ApiToken

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 409: ErrorSerializer}


class ModeRequest(serializers.Serializer[Any]):
    mode = serializers.ChoiceField(choices=modes.MODES)
    force = serializers.BooleanField(default=False)
    reason = serializers.CharField(default="", allow_blank=True, max_length=2000)


class SplitRequest(serializers.Serializer[Any]):
    rabbitmq_percent = serializers.IntegerField(min_value=0, max_value=100)
    reason = serializers.CharField(default="", allow_blank=True, max_length=2000)


def caller(request: Request) -> str:
    """Who made a change, for the history: ``token:<name>`` or the staff user's name."""
    if isinstance(request.auth, ApiToken):
        return f"token:{request.auth.name}"
    return str(getattr(request.user, "username", "") or "unknown")


class AdminView(APIView):
    authentication_classes = [SessionAuthentication, BearerTokenAuthentication]
    permission_classes = [IsAdminUser]


class StatusView(AdminView):
    @extend_schema(responses={200: dict, **ERRORS})
    def get(self, request: Request) -> Response:
        return Response(status.report())


class ModeView(AdminView):
    @extend_schema(request=ModeRequest, responses={200: dict, **ERRORS})
    def post(self, request: Request) -> Response:
        body = ModeRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        state.set_mode(data["mode"], by=caller(request), source="api", reason=data["reason"], force=data["force"])
        return Response(status.report())


class SplitView(AdminView):
    @extend_schema(request=SplitRequest, responses={200: dict, **ERRORS})
    def post(self, request: Request) -> Response:
        body = SplitRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        state.set_split(data["rabbitmq_percent"], by=caller(request), source="api", reason=data["reason"])
        return Response(status.report())


class RollbackRequest(serializers.Serializer[Any]):
    reason = serializers.CharField(default="", allow_blank=True, max_length=2000)


class RollbackView(AdminView):
    @extend_schema(request=RollbackRequest, responses={200: dict, **ERRORS})
    def post(self, request: Request) -> Response:
        body = RollbackRequest(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data["reason"] or "manual rollback"
        rolled_back = rollback.rollback(by=caller(request), source="api", reason=reason)
        return Response({"rolled_back": rolled_back, **status.report()})


class MigratePendingView(AdminView):
    @extend_schema(request=None, responses={200: dict, 503: ErrorSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        progress = migrate_pending.migrate_pending()
        body = {"migrated": progress.migrated, "failed": progress.failed, "remaining": progress.remaining}
        if progress.failed:
            return Response(
                error_body("broker_unavailable", progress.error, body), status=503, headers={"Retry-After": "5"}
            )
        return Response(body)


class DiscrepanciesView(AdminView):
    @extend_schema(responses={200: dict, **ERRORS})
    def get(self, request: Request) -> Response:
        found = Discrepancy.objects.all()
        kind = request.query_params.get("kind")
        if kind:
            found = found.filter(kind=kind)
        results = [
            {"kind": d.kind, "task_id": d.task_id, "leg": d.leg, "detail": d.detail, "found_at": d.found_at.isoformat()}
            for d in found[:500]
        ]
        return Response({"count": found.count(), "results": results})
