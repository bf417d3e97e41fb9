from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView

from tasks.api.views import HealthView

urlpatterns = [
    path("v1/", include("tasks.api.urls")),
    path("admin/migration/", include("migration.urls")),
    path("health", HealthView.as_view(), name="health"),
    path("openapi.json", SpectacularJSONAPIView.as_view(permission_classes=[]), name="openapi"),
    path("django-admin/", admin.site.urls),
]

handler404 = "tasks.api.errors.not_found"
handler500 = "tasks.api.errors.server_error"
