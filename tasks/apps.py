from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Task types register themselves on import: the shipped ones, then the deployment's own.
        from helixagent.config import get_config
        from tasks import handlers  # noqa: F401
        from tasks.registry import import_modules

        import_modules(get_config().tasks.modules)
