"""PostgreSQL only: the trigger that wakes idle consumers (LISTEN/NOTIFY) at each insert."""

from typing import Any

from django.db import migrations

from migration.pgqueue import sql


def _run(statement: str) -> Any:
    def apply(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("migration", "0001_initial")]
    operations = [migrations.RunPython(_run(sql.PG_NOTIFY_TRIGGER), _run(sql.PG_NOTIFY_TRIGGER_DROP))]
