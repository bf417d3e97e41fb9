from django.contrib import admin
from django.utils import timezone

from tasks import transitions
from tasks.models import ApiToken, Task, TaskEvent


class TaskEventInline(admin.TabularInline):
    model = TaskEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "kind", "from_status", "to_status", "message", "worker_id", "data"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "task_type", "status", "priority", "queue", "dispatch_source", "retry_count", "created_at"]
    list_filter = ["status", "task_type", "priority", "queue"]
    search_fields = ["id", "task_name", "correlation_id"]
    inlines = [TaskEventInline]
    actions = ["redrive"]

    @admin.action(description="Re-drive selected dead-lettered tasks")
    def redrive(self, request, queryset):
        redriven = [task_id for task_id in queryset.values_list("pk", flat=True) if transitions.redrive(task_id)]
        self.message_user(request, f"{len(redriven)} task(s) re-driven; the others were not dead-lettered.")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "is_admin", "created_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # tokens are issued by `manage.py create_token`, which shows the key once

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
