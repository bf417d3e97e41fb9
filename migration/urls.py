from django.urls import path

from migration import api

urlpatterns = [
    path("status", api.StatusView.as_view(), name="migration-status"),
    path("mode", api.ModeView.as_view(), name="migration-mode"),
    path("split", api.SplitView.as_view(), name="migration-split"),
    path("rollback", api.RollbackView.as_view(), name="migration-rollback"),
    path("migrate-pending", api.MigratePendingView.as_view(), name="migration-migrate-pending"),
    path("discrepancies", api.DiscrepanciesView.as_view(), name="migration-discrepancies"),
]
