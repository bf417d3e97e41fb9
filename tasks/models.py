"""Task rows, their event history, and API tokens. PostgreSQL is the system of record."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.db import models
from django.db.models import Q

from tasks import states

#: the longest ``Idempotency-Key`` a task can be submitted under
IDEMPOTENCY_KEY_LENGTH = 200


def default_task_config() -> dict[str, object]:
    return {}


class Task(models.Model):
    """One submitted unit of work. Status changes only through :mod:`tasks.transitions`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_type = models.CharField(max_length=100)
    task_name = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=20, choices=[(s, s) for s in states.STATUSES], default=states.PENDING)
    priority = models.CharField(max_length=20, choices=[(p, p) for p in states.PRIORITIES], default="normal")
    payload = models.JSONField(default=dict)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=500, blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    correlation_id = models.CharField(max_length=200, blank=True, default="")
    parent_task_id = models.UUIDField(null=True, blank=True)
    queue = models.CharField(max_length=100)
    dispatch_source = models.CharField(max_length=20, blank=True, default="")
    worker_id = models.CharField(max_length=200, blank=True, default="")
    execution_id = models.UUIDField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    retry_count = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=3)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=IDEMPOTENCY_KEY_LENGTH, null=True, blank=True)
    config = models.JSONField(default=default_task_config, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    #: where the task's message was published (``postgresql``, ``postgresql+rabbitmq``, ``kafka``…).
    published_to = models.CharField(max_length=60, blank=True, default="")
    #: when the dual_write shadow copy was checked against this row; when the copies were verified.
    shadow_checked_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    #: when migrate-pending moved the task's message from the PostgreSQL queue to a broker.
    migrated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "helix_task"
        # Every status change writes a new row version with an entry in each index whose condition
        # the row meets, so the indexes cover only the rows their readers look for: a task that
        # ends costs two index entries (primary key, recent), not one per index.
        indexes = [
            # the dispatcher (due pending tasks), rollback and health (waiting tasks)
            models.Index(
                fields=["status", "scheduled_at"],
                name="helix_task_waiting",
                condition=Q(status__in=["pending", "queued"]),
            ),
            # stuck detection
            models.Index(fields=["heartbeat_at"], name="helix_task_running", condition=Q(status="running")),
            # listing, newest first; the verifier's last hour
            models.Index(fields=["-created_at", "-id"], name="helix_task_recent"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="helix_task_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.task_type} {self.id} ({self.status})"


class TaskEvent(models.Model):
    """One transition or progress report of a task; ``id`` orders a task's events (SSE ``id:``)."""

    id = models.BigAutoField(primary_key=True)
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="events", db_constraint=False, db_index=False
    )  # indexed by (task, id) below
    kind = models.CharField(max_length=20, default="transition")  # transition | progress
    from_status = models.CharField(max_length=20, blank=True, default="")
    to_status = models.CharField(max_length=20, blank=True, default="")
    message = models.TextField(blank=True, default="")
    worker_id = models.CharField(max_length=200, blank=True, default="")
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "helix_task_event"
        indexes = [
            models.Index(fields=["task", "id"], name="helix_task_event_task"),
            # starts and ends of executions by time: the rollback guard's sliding minute
            models.Index(
                fields=["created_at"],
                name="helix_task_event_execution",
                condition=Q(from_status="running") | Q(to_status="running"),
            ),
        ]


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; admin tokens also open ``/admin/*``."""

    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    is_admin = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "helix_api_token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, name: str, is_admin: bool = False) -> tuple[ApiToken, str]:
        """Create a token and return it with its clear-text key (shown once)."""
        key = "hx_" + secrets.token_urlsafe(32)
        token = cls.objects.create(name=name, key_hash=cls.hash_key(key), prefix=key[:10], is_admin=is_admin)
        return token, key
