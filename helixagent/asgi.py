"""ASGI entry point served by uvicorn on port 8080: HTTP through Django, WebSocket through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helixagent.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from django.urls import path  # noqa: E402

from tasks.api.streams import TaskEventsConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter([path("v1/ws/tasks/<uuid:task_id>", TaskEventsConsumer.as_asgi())]),
    }
)
