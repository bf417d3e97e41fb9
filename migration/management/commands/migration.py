"""``manage.py migration status|mode|split|rollback|migrate-pending|verify``: the operator's command line."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.management.base import CommandError, CommandParser
from tqdm import tqdm

from helixagent.commands import DatabaseCommand
from migration import migrate_pending, modes, rollback, state, status, verifier
from migration.exceptions import MigrationError
from migration.models import Discrepancy


class Command(DatabaseCommand):
    help = "Show or change the migration state (SPEC §4); every action prints the status as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="mode, split, brokers, queue depths, counters and recent changes")
        mode = sub.add_parser("mode", help="switch the migration mode")
        mode.add_argument("mode", choices=modes.MODES)
        mode.add_argument("--force", action="store_true", help="allow legacy → messaging")
        mode.add_argument("--reason", default="")
        split = sub.add_parser("split", help="share of dual_write tasks executed from the RabbitMQ copy")
        split.add_argument("percent", type=int)
        split.add_argument("--reason", default="")
        back = sub.add_parser("rollback", help="switch to legacy and re-enqueue broker-only tasks on PostgreSQL")
        back.add_argument("--reason", default="manual rollback")
        move = sub.add_parser("migrate-pending", help="move tasks waiting in PostgreSQL to the active broker")
        move.add_argument("--batch-size", type=int, default=2000)
        sub.add_parser("verify", help="check dual_write copies now and list discrepancies")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        by = f"cli:{getpass.getuser()}"
        try:
            if action == "mode":
                state.set_mode(options["mode"], by=by, source="cli", reason=options["reason"], force=options["force"])
            elif action == "split":
                state.set_split(options["percent"], by=by, source="cli", reason=options["reason"])
            elif action == "rollback":
                if not rollback.rollback(by=by, source="cli", reason=options["reason"]):
                    self.stderr.write("already in legacy mode: nothing to roll back")
            elif action == "migrate-pending":
                self._migrate_pending(options["batch_size"])
                return
            elif action == "verify":
                verifier.verify_due()
                found = [
                    {"kind": d.kind, "task_id": d.task_id, "leg": d.leg, "detail": d.detail}
                    for d in Discrepancy.objects.all()[:100]
                ]
                self.stdout.write(json.dumps({"discrepancies_found": Discrepancy.objects.count(), "latest": found}))
                return
        except MigrationError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(json.dumps(status.report(), indent=2, default=str))

    def _migrate_pending(self, batch_size: int) -> None:
        bar = tqdm(total=migrate_pending.waiting(), unit="task", desc="migrate-pending", file=self.stderr._out)
        done = 0

        def advance(progress: migrate_pending.Progress) -> None:
            nonlocal done
            bar.update(progress.migrated - done)
            done = progress.migrated

        try:
            result = migrate_pending.migrate_pending(batch_size, on_batch=advance)
        except KeyboardInterrupt:  # the open batch rolled back; what was committed stays moved
            bar.close()
            left = migrate_pending.waiting()
            self.stdout.write(json.dumps({"migrated": done, "failed": 0, "remaining": left, "interrupted": True}))
            raise CommandError("interrupted: run migrate-pending again to move the rest", returncode=130) from None
        bar.close()
        self.stdout.write(
            json.dumps({"migrated": result.migrated, "failed": result.failed, "remaining": result.remaining})
        )
        if result.failed:
            raise CommandError(f"broker_unavailable: {result.error}")
