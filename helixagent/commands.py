"""The base of HelixAgent's management commands.

An operator who runs ``manage.py migration status`` while PostgreSQL is down should read one line
that says so, not a traceback, and a script should be able to tell "try again later" from a
mistake: the command exits with ``EX_UNAVAILABLE`` (69), as the API answers 503.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError


class DatabaseCommand(BaseCommand):
    """A command that needs the database: an unreachable one ends it with a one-line error."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"database unavailable: {reason}", returncode=os.EX_UNAVAILABLE) from None
