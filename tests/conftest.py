"""Shared fixtures: the real services, live worker processes and an authenticated API client.

Integration and acceptance tests need PostgreSQL, RabbitMQ and Kafka; ``scripts/test.sh``
(``make test``) starts them and exports their URLs. Without them those tests fail with a message
saying so; they are never skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: short timeouts so fault tests finish quickly; production defaults are in configs/messaging.yaml.
FAST_WORKER_ENV = {
    "HELIX_VISIBILITY_TIMEOUT": "4",
    "HELIX_STUCK_THRESHOLD": "3",
    "HELIX_HEARTBEAT_INTERVAL": "0.5",
    "HELIX_DISPATCH_INTERVAL": "0.3",
    "HELIX_POLL_INTERVAL": "1.0",
    # tests pile up deliberate backlogs; the one that proves the automatic rollback turns it on
    "AUTO_ROLLBACK": "false",
}


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test`, which starts the services")
    return value


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = require_env("DATABASE_URL")
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.fail("DATABASE_URL must point at PostgreSQL for integration tests")
    return url


def test_database_url(postgres_url: str) -> str:
    from django.conf import settings

    return urlunparse(urlparse(postgres_url)._replace(path="/" + settings.DATABASES["default"]["NAME"]))


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, postgres_url: str) -> Iterator[None]:
    """After pytest-django creates the test database, point the queue transport at it too."""
    from helixagent.celery import app

    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "dsn": test_database_url(postgres_url)}
    yield
    app.pool.force_close_all()  # let pytest-django drop the test database
    # ...which a session still open in a background thread (the outbox publisher's) would prevent
    import psycopg
    from django.conf import settings

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [settings.DATABASES["default"]["NAME"]],
        )


@pytest.fixture
def live_db_url(transactional_db: None, postgres_url: str) -> str:
    """The URL of the test database, for processes started by a test (workers, servers)."""
    return test_database_url(postgres_url)


class WorkerProcess:
    """A real ``celery worker`` in its own process group, so a test can SIGKILL all of it."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, concurrency: int, pool: str, queues: str = ""
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "helixagent",
            "worker",
            "--loglevel",
            "INFO",
            "--hostname",
            f"{name}@%h",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--without-mingle",
            "--without-gossip",
            *(["--queues", queues] if queues else []),
        ]
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log_path.read_text():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} not ready after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crashed node would stop."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM to the main process, as a supervisor stops a worker: its warm shutdown stops
        the pool. (SIGTERM to the whole group would also end prefork pool processes in the middle
        of a write to the pool's queues, which can deadlock the main process's shutdown.)"""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def process_env(db_url: str, log_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **FAST_WORKER_ENV, "DATABASE_URL": db_url, "HELIX_LOG_DIR": str(log_dir), **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.fixture
def start_worker(live_db_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes on the test database; all are stopped at the end of the test."""
    workers: list[WorkerProcess] = []

    def start(
        name: str = "w1", concurrency: int = 4, pool: str = "threads", queues: str = "", **env: str
    ) -> WorkerProcess:
        worker = WorkerProcess(name, process_env(live_db_url, tmp_path, **env), tmp_path, concurrency, pool, queues)
        workers.append(worker)
        return worker.wait_ready()

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def api(transactional_db: None) -> Any:
    """A DRF client with a valid bearer token."""
    from rest_framework.test import APIClient

    from tasks.models import ApiToken

    _token, key = ApiToken.issue("tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def admin_api(transactional_db: None) -> Any:
    """A DRF client with an admin token (opens ``/admin/*``)."""
    from rest_framework.test import APIClient

    from tasks.models import ApiToken

    _token, key = ApiToken.issue("operator", is_admin=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(db_url: str, log_dir: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Serve the ASGI app with uvicorn on a free port; return the process and its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "helixagent.asgi:application", "--port", str(port)]
    with (log_dir / "api.log").open("w") as log:  # the server writes to its own copy of the file
        server = subprocess.Popen(
            [*command, "--log-level", "warning"],
            cwd=ROOT,
            env=process_env(db_url, log_dir, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return server, f"http://127.0.0.1:{port}"


@contextmanager
def api_server(db_url: str, log_dir: Path, **env: str) -> Iterator[str]:
    """The API served by uvicorn, as in production, until the block ends; yields its base URL."""
    server, base = start_api(db_url, log_dir, **env)

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5):
                return True
        except OSError:  # not listening yet, or answering 503 (HTTPError is an OSError)
            return False

    try:
        wait_for(up, 30, what="live api")
        yield base
    finally:
        server.terminate()
        server.wait(20)


@pytest.fixture
def live_api(live_db_url: str, tmp_path: Path) -> Iterator[str]:
    with api_server(live_db_url, tmp_path) as base:
        yield base


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- migration modes ----------------------------------------------------------------------------
class ModeSetting:
    """A migration mode as the tests set it: ``messaging`` names its broker."""

    def __init__(self, mode: str, rabbitmq_percent: int = 0, broker: str = "rabbitmq") -> None:
        self.mode, self.rabbitmq_percent, self.broker = mode, rabbitmq_percent, broker

    @property
    def id(self) -> str:
        if self.mode == "dual_write":
            return f"dual_write-{self.rabbitmq_percent}"
        return f"messaging-{self.broker}" if self.mode == "messaging" else self.mode

    @property
    def env(self) -> dict[str, str]:
        """What a worker or API process started by the test needs to follow this setting."""
        return {"MESSAGING_BROKER": self.broker}


ALL_MODES = [
    ModeSetting("legacy"),
    ModeSetting("dual_write", 0),
    ModeSetting("dual_write", 50),
    ModeSetting("dual_write", 100),
    ModeSetting("messaging", broker="rabbitmq"),
    ModeSetting("messaging", broker="kafka"),
]


def apply_mode(setting: ModeSetting) -> None:
    """Store ``setting`` as the live state, as an operator would (with ``force``)."""
    from helixagent.config import get_config
    from migration import state

    os.environ["MESSAGING_BROKER"] = setting.broker
    get_config.cache_clear()
    state.set_split(setting.rabbitmq_percent, by="tests", source="api")
    state.set_mode(setting.mode, by="tests", source="api", force=True)


def purge_rabbitmq() -> None:
    """Drop what earlier tests left in the RabbitMQ task queues (their rows are gone) and in the
    dead-letter queue."""
    from kombu import Connection

    from migration.legs.rabbitmq import DLQ, RabbitMQLeg
    from tasks.routing import ALL_QUEUES

    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        channel = conn.channel()
        RabbitMQLeg.declare_topology(channel)
        for queue in (*ALL_QUEUES, DLQ):
            channel.queue_purge(queue)


def rabbitmq_depth() -> int:
    """Messages ready in the RabbitMQ task queues (delivered and not yet acknowledged ones are
    not counted)."""
    from kombu import Connection

    from tasks.routing import ALL_QUEUES

    with Connection(require_env("RABBITMQ_URL"), connect_timeout=5) as conn:
        channel = conn.channel()
        return sum(channel.queue_declare(queue, passive=True).message_count for queue in ALL_QUEUES)


def pg_depth() -> int:
    """Task messages in the PostgreSQL queue, leased or not."""
    from migration.models import QueueMessage
    from tasks.routing import ALL_QUEUES

    return QueueMessage.objects.filter(queue__in=ALL_QUEUES).count()


@pytest.fixture
def switch_mode(transactional_db: None) -> Iterator[Callable[[ModeSetting], None]]:
    """``switch_mode(setting)`` stores a migration state; the broker choice is undone afterwards."""
    from helixagent.config import get_config
    from migration import state

    saved = os.environ.get("MESSAGING_BROKER")
    yield apply_mode
    if saved is None:
        os.environ.pop("MESSAGING_BROKER", None)
    else:
        os.environ["MESSAGING_BROKER"] = saved
    get_config.cache_clear()
    state.forget()


@pytest.fixture(params=ALL_MODES, ids=lambda setting: setting.id)
def migration_mode(request: pytest.FixtureRequest, switch_mode: Callable[[ModeSetting], None]) -> ModeSetting:
    """Run the test once per migration mode (SPEC §4) against the real brokers."""
    setting: ModeSetting = request.param
    purge_rabbitmq()
    switch_mode(setting)
    return setting


@pytest.fixture(autouse=True)
def _fresh_migration_state() -> None:
    """Each test reads the migration state of its own database, not one cached by the last test."""
    from migration import state

    state.forget()


def rabbitmq_reachable() -> bool:
    from kombu import Connection

    try:
        with Connection(require_env("RABBITMQ_URL"), connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return True
    except Exception:
        return False


def stop_rabbitmq() -> None:
    """Stop the RabbitMQ application: connections drop, durable queues stay on disk (the Erlang
    node keeps running, so it is back in seconds)."""
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True, timeout=60)


def start_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True, timeout=120)
    wait_for(rabbitmq_reachable, 60, 0.5, what="RabbitMQ back")
    from migration.router import LEG_RETRY

    time.sleep(LEG_RETRY)  # this process's publisher retries the broker after this back-off


def restart_postgres(how: str, *args: str) -> None:
    """``scripts/services.sh restart-postgres [SECONDS]`` or ``crash-postgres``."""
    from django.db import connection

    result = subprocess.run(["scripts/services.sh", how, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    connection.close()  # this process's connection died with the server


@contextmanager
def frozen(process: str) -> Iterator[None]:
    """The service whose processes match ``process`` (a ``pgrep -f`` pattern) hung for the test
    (SIGSTOP: connections stay open and nothing answers), then thawed."""
    pids = subprocess.run(["pgrep", "-f", process], capture_output=True, text=True, check=True).stdout.split()
    for pid in pids:
        os.kill(int(pid), signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(int(pid), signal.SIGCONT)


def kafka_frozen() -> AbstractContextManager[None]:
    return frozen(r"kafka\.Kafka .*server\.properties")


def delete_kafka_work_topic() -> None:
    """Delete ``helixagent.tasks`` as an operator would, and wait until the broker has let go of it."""
    from confluent_kafka.admin import AdminClient

    from migration.legs.kafka import WORK_TOPIC

    admin = AdminClient({"bootstrap.servers": require_env("KAFKA_BOOTSTRAP_SERVERS")})
    for future in admin.delete_topics([WORK_TOPIC], operation_timeout=10).values():
        future.result(15)
    wait_for(lambda: WORK_TOPIC not in admin.list_topics(timeout=10).topics, 30, what="the topic gone")


def rabbitmq_frozen() -> AbstractContextManager[None]:
    return frozen("beam.smp")


def postgres_frozen() -> AbstractContextManager[None]:
    """The server and every backend process (Debian's cluster, as ``make services`` runs it)."""
    return frozen(r"^(/usr/lib/postgresql/[0-9]+/bin/postgres |postgres: )")


@pytest.fixture
def rabbitmq_stopped() -> Iterator[None]:
    """RabbitMQ stopped for the test."""
    stop_rabbitmq()
    try:
        yield
    finally:
        start_rabbitmq()
