"""The Celery application. ``celery -A helixagent worker`` finds it here."""

from __future__ import annotations

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helixagent.settings")
TRANSPORT_ALIASES["pgqueue"] = "migration.pgqueue.transport:Transport"
TRANSPORT_ALIASES["router"] = "migration.router:Transport"

app = Celery("helixagent", amqp="helixagent.reconnect:AMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["tasks"], related_name="runner")
