from django.apps import AppConfig


class MigrationConfig(AppConfig):
    name = "migration"
    default_auto_field = "django.db.models.BigAutoField"
