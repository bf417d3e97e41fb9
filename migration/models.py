"""Tables of the PostgreSQL queue. The transport reads and writes them with the SQL in
:mod:`migration.pgqueue.sql`; the models exist so ``manage.py migrate`` creates them."""

from __future__ import annotations

from django.db import models


class QueueMessage(models.Model):
    """A message waiting in (or leased from) a queue. Deleted when acknowledged."""

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=200)
    priority = models.SmallIntegerField(default=0)
    payload = models.TextField()
    #: epoch seconds from which the message can be claimed; a claim moves it forward (the lease).
    visible_at = models.FloatField()
    delivery_count = models.IntegerField(default=0)
    #: epoch seconds after which the message is dropped (queues with a message TTL, e.g. events).
    expires_at = models.FloatField(null=True)
    created_at = models.FloatField()
    #: Celery's task id of the message (empty for control and event messages).
    message_id = models.CharField(max_length=64, default="", blank=True)

    class Meta:
        db_table = "helix_queue_message"
        indexes = [
            models.Index(fields=["queue", "-priority", "id"], name="helix_queue_claim"),
            models.Index(fields=["message_id"], name="helix_queue_message_id"),
        ]


class QueueBinding(models.Model):
    """An exchange → queue binding, shared by every process (events, pidbox, Flower)."""

    exchange = models.CharField(max_length=200)
    exchange_type = models.CharField(max_length=20, default="direct")
    routing_key = models.CharField(max_length=200, default="")
    pattern = models.CharField(max_length=200, default="")
    queue = models.CharField(max_length=200)
    #: message TTL of the queue in seconds (``x-message-ttl``), if any.
    message_ttl = models.FloatField(null=True)
    #: the binding and its messages go when no consumer has touched it for this long (``x-expires``).
    expires = models.FloatField(null=True)
    last_seen = models.FloatField()

    class Meta:
        db_table = "helix_queue_binding"
        constraints = [
            models.UniqueConstraint(fields=["exchange", "routing_key", "queue"], name="helix_queue_binding_unique")
        ]


class MigrationState(models.Model):
    """The live migration mode: one row (``id = 1``) that every process reads every second.

    ``boot_config`` holds what the configuration asked for at the last start-up (each value with
    where it came from: ``config`` or ``env``), so a restart with a new or newly set
    ``MIGRATION_MODE`` counts as a change while a restart with the same settings leaves a
    run-time change in place (latest change wins).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    mode = models.CharField(max_length=20, default="legacy")
    rabbitmq_percent = models.PositiveSmallIntegerField(default=0)
    changed_at = models.DateTimeField()
    changed_by = models.CharField(max_length=200, default="")
    reason = models.TextField(default="", blank=True)
    source = models.CharField(max_length=20, default="default")
    boot_config = models.JSONField(default=dict)
    #: tasks moved from the PostgreSQL queue to a broker by migrate-pending, ever.
    tasks_migrated = models.BigIntegerField(default=0)

    class Meta:
        db_table = "helix_migration_state"


class Discrepancy(models.Model):
    """A broker copy that does not agree with its task row (SPEC §4, Discrepancies)."""

    KINDS = ("mismatch", "missing_copy", "orphan_copy")

    kind = models.CharField(max_length=20, choices=[(k, k) for k in KINDS])
    task_id = models.CharField(max_length=64)
    leg = models.CharField(max_length=20)
    detail = models.TextField(default="", blank=True)
    found_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "helix_discrepancy"
        ordering = ("-found_at", "-id")
        constraints = [models.UniqueConstraint(fields=["kind", "task_id", "leg"], name="helix_discrepancy_once")]


class ModeChange(models.Model):
    """History of the migration state: one row per change, with who, when, why and from where."""

    SOURCES = ("default", "config", "env", "api", "admin", "cli", "auto_rollback")
    #: whether the change was a rollback (its reason says what fired it).
    rollback = models.BooleanField(default=False)

    mode = models.CharField(max_length=20)
    previous_mode = models.CharField(max_length=20, default="")
    rabbitmq_percent = models.PositiveSmallIntegerField(default=0)
    changed_at = models.DateTimeField()
    changed_by = models.CharField(max_length=200, default="")
    reason = models.TextField(default="", blank=True)
    source = models.CharField(max_length=20, choices=[(s, s) for s in SOURCES])

    class Meta:
        db_table = "helix_mode_change"
        ordering = ("-changed_at", "-id")


class OutboxMessage(models.Model):
    """A broker copy committed with its task row and not yet confirmed by the broker.

    The submitting process publishes it right after commit and deletes the row; the relay
    (:mod:`migration.outbox`) publishes whatever is left, after a crash between commit and
    publish or while a broker was away.
    """

    id = models.BigAutoField(primary_key=True)
    task_id = models.CharField(max_length=64)
    leg = models.CharField(max_length=20)
    queue = models.CharField(max_length=200)
    payload = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "helix_outbox"
