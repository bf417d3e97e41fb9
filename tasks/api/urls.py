from django.urls import path

from tasks.api import streams, views

urlpatterns = [
    path("tasks", views.TaskListCreateView.as_view(), name="task-list"),
    path("tasks/<uuid:task_id>", views.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<uuid:task_id>/status", views.TaskStatusView.as_view(), name="task-status"),
    path("tasks/<uuid:task_id>/cancel", views.TaskCancelView.as_view(), name="task-cancel"),
    path("tasks/<uuid:task_id>/events", streams.task_events, name="task-events"),
]
