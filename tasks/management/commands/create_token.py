from typing import Any

from django.core.management.base import CommandParser

from helixagent.commands import DatabaseCommand
from tasks.models import ApiToken


class Command(DatabaseCommand):
    help = "Create an API token and print it (shown once). --admin tokens also open /admin/*."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--admin", action="store_true", help="also allow the admin API")

    def handle(self, *args: Any, name: str, admin: bool, **options: Any) -> None:
        _token, key = ApiToken.issue(name, is_admin=admin)
        self.stdout.write(key)
