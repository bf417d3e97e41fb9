"""The stored migration state: precedence, history, transitions and the admin API."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from helixagent.config import load_config
from migration import state
from migration.exceptions import InvalidValue, MigrationError
from migration.models import MigrationState, ModeChange
from tests.conftest import purge_rabbitmq, require_env

pytestmark = pytest.mark.django_db(transaction=True)


def boot(tmp_path: Any, mode: str = "legacy", **env: str) -> None:
    """A start-up with ``configs``-file mode ``mode`` and the given environment."""
    config_file = tmp_path / "messaging.yaml"
    config_file.write_text(f"migration:\n  mode: {mode}\n")
    environ = {"HELIX_CONFIG": str(config_file), **env}
    state.bootstrap(load_config(environ=environ), environ)


def test_first_start_records_the_configuration(tmp_path: Any) -> None:
    boot(tmp_path, "dual_write")
    row = MigrationState.objects.get(pk=1)
    assert (row.mode, row.source, row.changed_by) == ("dual_write", "config", "start-up")
    assert ModeChange.objects.count() == 1


def test_a_restart_keeps_a_runtime_change_until_the_configuration_changes(tmp_path: Any) -> None:
    boot(tmp_path, "legacy")
    state.set_mode("messaging", by="ops", source="api", reason="cut over", force=True)
    boot(tmp_path, "legacy")  # same settings: the latest change (the API's) wins
    assert MigrationState.objects.get(pk=1).mode == "messaging"
    boot(tmp_path, "legacy", MIGRATION_MODE="legacy")  # rollback by environment and restart
    row = MigrationState.objects.get(pk=1)
    assert (row.mode, row.source) == ("legacy", "env")
    assert list(ModeChange.objects.values_list("mode", "source"))[:2] == [("legacy", "env"), ("messaging", "api")]


def test_a_changed_split_in_the_environment_applies_at_restart(tmp_path: Any) -> None:
    boot(tmp_path, "dual_write")
    boot(tmp_path, "dual_write", CONSUMER_RABBITMQ_PERCENT="25")
    row = MigrationState.objects.get(pk=1)
    assert (row.mode, row.rabbitmq_percent, row.source) == ("dual_write", 25, "env")


def test_transitions_are_checked_and_nothing_changes_on_refusal(tmp_path: Any) -> None:
    boot(tmp_path, "legacy")
    with pytest.raises(MigrationError, match="force"):
        state.set_mode("messaging", by="ops", source="cli")
    with pytest.raises(InvalidValue):
        state.set_split(101, by="ops", source="cli")
    assert MigrationState.objects.get(pk=1).mode == "legacy"
    assert ModeChange.objects.count() == 1


def test_the_admin_api_needs_an_admin_and_records_who_changed_what(api: Any, admin_api: Any) -> None:
    assert api.get("/admin/migration/status").status_code == 403
    response = admin_api.post("/admin/migration/split", {"rabbitmq_percent": 40, "reason": "ramp"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["consumer_traffic_split"] == {"rabbitmq": 40, "postgresql": 60}
    assert (body["changed_by"], body["source"], body["reason"]) == ("token:operator", "api", "ramp")
    assert body["brokers"]["rabbitmq"] == "ok" and body["brokers"]["kafka"] == "ok"
    bad = admin_api.post("/admin/migration/split", {"rabbitmq_percent": "lots"}, format="json")
    assert bad.status_code == 400 and "rabbitmq_percent" in bad.json()["error"]["message"]
    refused = admin_api.post("/admin/migration/mode", {"mode": "messaging"}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "invalid_transition"


def test_the_status_counts_what_waits_in_the_dead_letter_queue(admin_api: Any) -> None:
    purge_rabbitmq()
    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        conn.Producer().publish(b"not json", exchange="helixagent.dlx", routing_key="")
    depths = admin_api.get("/admin/migration/status").json()["queue_depths"]
    assert depths["rabbitmq"]["helixagent.dlq"] == 1
    purge_rabbitmq()


def test_the_staff_session_opens_the_admin_api(admin_client: Any) -> None:
    body = admin_client.get("/admin/migration/status").json()
    assert body["mode"] == "legacy" and "queue_depths" in body


def test_the_command_line_switches_reports_and_refuses(tmp_path: Any) -> None:
    import io
    import json

    from django.core.management import CommandError, call_command

    boot(tmp_path, "legacy")
    out = io.StringIO()
    call_command("migration", "mode", "dual_write", "--reason", "ramp up", stdout=out)
    report = json.loads(out.getvalue())
    assert (report["mode"], report["source"], report["reason"]) == ("dual_write", "cli", "ramp up")
    assert report["changed_by"].startswith("cli:")
    with pytest.raises(CommandError, match="validation_error"):
        call_command("migration", "split", "150", stdout=io.StringIO())
