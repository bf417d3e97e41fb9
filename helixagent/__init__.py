"""HelixAgent: a Django + Celery task platform that moves its queue from PostgreSQL to brokers."""

from helixagent.celery import app as celery_app

__all__ = ["celery_app"]
