"""Request validation and response shapes of the task API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tasks import jsonvalue, states
from tasks.models import Task
from tasks.registry import get_task_type

MAX_PAYLOAD_BYTES = 1024 * 1024
CONFIG_KEYS = {"timeout_seconds", "max_retries", "retry_delay_seconds", "allow_cancel"}


class TaskConfigSerializer(serializers.Serializer):
    timeout_seconds = serializers.FloatField(required=False, min_value=0.1, max_value=86400)
    max_retries = serializers.IntegerField(required=False, min_value=0, max_value=100)
    retry_delay_seconds = serializers.FloatField(required=False, min_value=0, max_value=86400)
    allow_cancel = serializers.BooleanField(required=False)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - CONFIG_KEYS)
            if unknown:
                raise serializers.ValidationError(f"unknown keys {unknown}; allowed: {sorted(CONFIG_KEYS)}")
        return super().to_internal_value(data)


class TaskCreateSerializer(serializers.Serializer):
    task_type = serializers.CharField(max_length=100)
    task_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    payload = serializers.JSONField(required=False, default=dict)
    priority = serializers.ChoiceField(choices=states.PRIORITIES, required=False, default="normal")
    correlation_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    parent_task_id = serializers.UUIDField(required=False, allow_null=True)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True)
    deadline = serializers.DateTimeField(required=False, allow_null=True)
    config = TaskConfigSerializer(required=False)

    def validate_task_type(self, value: str) -> str:
        get_task_type(value)  # raises UnknownTaskType, which names the field and the known types
        return value

    def validate_payload(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object")
        try:
            size = len(jsonvalue.encode(value))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        if size > MAX_PAYLOAD_BYTES:
            raise serializers.ValidationError(f"is {size} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} (1 MiB)")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        scheduled, deadline = attrs.get("scheduled_at"), attrs.get("deadline")
        if scheduled and deadline and deadline <= scheduled:
            raise serializers.ValidationError({"deadline": "must be later than scheduled_at"})
        return attrs


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = [
            "id",
            "task_type",
            "task_name",
            "status",
            "priority",
            "payload",
            "progress",
            "progress_message",
            "result",
            "last_error",
            "correlation_id",
            "parent_task_id",
            "queue",
            "dispatch_source",
            "worker_id",
            "retry_count",
            "max_retries",
            "scheduled_at",
            "deadline",
            "config",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
        ]


class TaskAcceptedSerializer(serializers.ModelSerializer):
    message = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id",
            "task_type",
            "task_name",
            "status",
            "priority",
            "queue",
            "scheduled_at",
            "created_at",
            "message",
        ]

    def get_message(self, task: Task) -> str:
        return str(self.context.get("message", "task accepted"))


class TaskStatusSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = ["id", "status", "progress", "progress_message", "retry_count", "last_error", "updated_at"]


class ErrorSerializer(serializers.Serializer):
    """``{"error": {"code", "message", "details"}}``"""

    error = serializers.DictField()
