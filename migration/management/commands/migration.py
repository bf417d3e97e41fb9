"""``manage.py migration status|mode|split``: the operator's command line for the migration."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from migration import modes, state, status
from migration.exceptions import MigrationError


class Command(BaseCommand):
    help = "Show or change the migration state: status | mode MODE [--force] | split PERCENT"

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="mode, split, brokers, queue depths and recent changes (JSON)")
        mode = sub.add_parser("mode", help="switch the migration mode")
        mode.add_argument("mode", choices=modes.MODES)
        mode.add_argument("--force", action="store_true", help="allow legacy → messaging")
        mode.add_argument("--reason", default="")
        split = sub.add_parser("split", help="share of dual_write tasks executed from the RabbitMQ copy")
        split.add_argument("percent", type=int)
        split.add_argument("--reason", default="")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        by = f"cli:{getpass.getuser()}"
        try:
            if action == "mode":
                state.set_mode(options["mode"], by=by, source="cli", reason=options["reason"], force=options["force"])
            elif action == "split":
                state.set_split(options["percent"], by=by, source="cli", reason=options["reason"])
        except MigrationError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(json.dumps(status.report(), indent=2, default=str))
