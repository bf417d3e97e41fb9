"""Django settings. Every tunable value comes from :mod:`helixagent.config`; no secrets here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kombu import Exchange, Queue

from helixagent.config import BASE_DIR, get_config
from helixagent.dbconnection import BoundedConnection
from tasks.routing import ALL_QUEUES

CONFIG = get_config()
VAR_DIR = Path(os.environ.get("HELIX_VAR_DIR", BASE_DIR / "var"))
LOG_DIR = Path(os.environ.get("HELIX_LOG_DIR", BASE_DIR / "logs"))
VAR_DIR.mkdir(parents=True, exist_ok=True)
LOG_DIR.mkdir(parents=True, exist_ok=True)

# A per-checkout key is generated on first start; set DJANGO_SECRET_KEY in production.
_key_file = VAR_DIR / "secret_key"
if "DJANGO_SECRET_KEY" not in os.environ and not _key_file.exists():
    from django.core.management.utils import get_random_secret_key

    _key_file.write_text(get_random_secret_key())
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _key_file.read_text().strip()
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")


def database_settings(url: str, pool_size: int = 0) -> dict[str, Any]:
    """Translate ``database_url`` into a Django DATABASES entry (SQLite when empty).

    With a ``pool_size``, PostgreSQL connections are borrowed from Django's connection pool (at
    most that many) instead of being kept open one per thread, and every call on them is bounded
    (:mod:`helixagent.dbconnection`). A request that waits ``POOL_WAIT`` seconds for a free
    connection fails as a database outage does (503).
    """
    if not url or url.startswith("sqlite://"):
        path = url.removeprefix("sqlite:///") if url else str(VAR_DIR / "helixagent.sqlite3")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    parts = urlparse(url)
    entry: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": False,  # a broken connection fails one request or task, then is replaced
        # Django's cursors bind parameters on the client and are never prepared; the hot statements
        # of helixagent.prepared bind on the server and are prepared at once. They find their rows
        # by primary key, so one generic plan serves every call instead of planning each again.
        "OPTIONS": {
            "connect_timeout": 5,
            "prepare_threshold": 0,
            "options": "-c plan_cache_mode=force_generic_plan",
        },
    }
    if pool_size:
        entry["CONN_MAX_AGE"] = 0  # the connection goes back to the pool at the end of each request
        entry["OPTIONS"]["pool"] = {
            "min_size": min(2, pool_size),
            "max_size": pool_size,
            "timeout": POOL_WAIT,
            "connection_class": BoundedConnection,
        }
    return entry


POOL_WAIT = 5.0
#: Whether this process serves the API: an ASGI server imports ``helixagent.asgi``, which sets
#: Django up and so reads these settings. Under ASGI, Django runs each request on a thread of its
#: own, so a connection kept per thread would be a new PostgreSQL session (and password exchange)
#: for every request, left for the garbage collector to close. Django's advice for ASGI is a
#: connection pool. Celery workers reuse their threads and keep a persistent connection in each.
SERVES_API = "helixagent.asgi" in sys.modules
DATABASES = {"default": database_settings(CONFIG.database_url, CONFIG.api.database_pool if SERVES_API else 0)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "tasks",
    "migration",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "tasks.api.errors.DatabaseUnavailableMiddleware",
    "tasks.api.errors.NulCharacterMiddleware",
]

ROOT_URLCONF = "helixagent.urls"
WSGI_APPLICATION = "helixagent.wsgi.application"
ASGI_APPLICATION = "helixagent.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
USE_TZ = True
TIME_ZONE = "UTC"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tasks.api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["tasks.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "tasks.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "HelixAgent API",
    "DESCRIPTION": "Submit background tasks and follow them; operate the queue migration.",
    "VERSION": "1.0.0",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tasks.api.schema.add_streaming_endpoints",
    ],
}
# Payloads are limited to 1 MiB by the API itself (with a message naming the field).
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

# Celery: the broker is the router (migration.router), which routes task messages by migration
# mode and keeps everything else on the PostgreSQL (or embedded SQLite) queue.
CELERY_BROKER_URL = "router://localhost//"
_db = DATABASES["default"]
QUEUE_DSN = CONFIG.database_url if CONFIG.uses_postgresql else f"sqlite:///{_db['NAME']}"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "dsn": QUEUE_DSN,
    "visibility_timeout": CONFIG.queue.visibility_timeout,
    "claim_batch": CONFIG.queue.claim_batch,
    "polling_interval": CONFIG.queue.poll_interval,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker waits out a database outage of any length (attempts every 5 s, helixagent.reconnect)
# instead of exiting after Celery's default of 100 attempts.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
# Task events cost the consuming loop a publish per received, started and finished task, so they
# are off as in Celery's default. Flower switches them on in every worker it sees (when it starts,
# then every 5 s); `make run` starts its worker with `-E` so Flower shows every task from the first.
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_DEFAULT_QUEUE = "helixagent.tasks.background"
# SPEC §5 topology: one direct exchange, the five queues bound by their own names.
CELERY_TASK_QUEUES = [Queue(name, Exchange("helixagent.tasks", type="direct"), routing_key=name) for name in ALL_QUEUES]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# a message whose body cannot be decoded is dead-lettered, not dropped (helixagent/consumer.py)
CELERY_WORKER_CONSUMER = "helixagent.consumer:Consumer"
# Celery's Django fixup closes the database connection around every task unless this is set;
# the runner instead recycles connections as Django does per request (CONN_MAX_AGE, health checks).
CELERY_DB_REUSE_MAX = 100_000

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "helixagent.logging.JsonFormatter"}},
    "filters": {"repeats": {"()": "helixagent.logging.RepeatFilter", "window": 30.0}},
    "handlers": {
        "file": {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": str(LOG_DIR / "helixagent.log"),
            "formatter": "json",
        },
        "console": {"class": "logging.StreamHandler", "formatter": "json"},
        "discrepancies": {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": str(LOG_DIR / "migration-discrepancies.log"),
            "formatter": "json",
        },
    },
    "loggers": {
        # one JSON line per discrepancy (SPEC §4); they also reach helixagent.log
        "helixagent.migration.discrepancies": {"handlers": ["discrepancies"], "propagate": True},
        # librdkafka's own lines: during an outage it logs every refused connection
        "helixagent.migration.kafka.client": {"filters": ["repeats"], "propagate": True},
        "helixagent": {
            "handlers": ["file", "console"],
            "level": os.environ.get("HELIX_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "psycopg.pool": {"handlers": ["file", "console"], "level": "WARNING", "propagate": False},
    },
}

# The `notify` task type sends through this backend; the default writes files under var/mail.
EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = str(VAR_DIR / "mail")
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "helixagent@localhost")
