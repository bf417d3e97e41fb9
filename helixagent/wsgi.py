"""WSGI entry point (the ASGI one in :mod:`helixagent.asgi` is what ``make run`` serves)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helixagent.settings")
application = get_wsgi_application()
