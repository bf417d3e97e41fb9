"""ASGI entry point served by uvicorn on port 8080."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helixagent.settings")
application = get_asgi_application()
