from django.urls import path

from migration import api

urlpatterns = [
    path("status", api.StatusView.as_view(), name="migration-status"),
    path("mode", api.ModeView.as_view(), name="migration-mode"),
    path("split", api.SplitView.as_view(), name="migration-split"),
]
