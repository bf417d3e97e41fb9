import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from helixagent.commands import DatabaseCommand


class Command(DatabaseCommand):
    help = "Create the 'admin' superuser if missing and print its password (kept in var/admin_password)."

    def handle(self, *args: Any, **options: Any) -> None:
        path = settings.VAR_DIR / "admin_password"
        users = get_user_model().objects
        if not path.exists() or not users.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            user = users.filter(username="admin").first() or users.create_superuser(
                "admin", "admin@localhost", password
            )
            user.set_password(password)
            user.save()
            path.write_text(password)
        self.stdout.write(path.read_text().strip())
