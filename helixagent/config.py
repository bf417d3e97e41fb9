"""Typed configuration: defaults < ``configs/messaging.yaml`` < environment, parsed once.

Only this module reads the YAML file and the environment variables it documents; everything
else asks :func:`get_config`. A bad value fails start-up with a :class:`ConfigError` that names
the key and what it accepts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = BASE_DIR / "configs" / "messaging.yaml"

MODES = ("legacy", "dual_write", "messaging")
BROKERS = ("rabbitmq", "kafka")


class ConfigError(ValueError):
    """A configuration value is missing or out of range; the message names the key."""


@dataclass(frozen=True)
class MigrationConfig:
    mode: str = "legacy"
    consumer_rabbitmq_percent: int = 0
    verify_consistency: bool = True
    log_discrepancies: bool = True
    dual_write_timeout: float = 30.0
    auto_rollback: bool = True
    error_threshold: int = 50
    latency_threshold: float = 5000.0
    min_samples: int = 20


@dataclass(frozen=True)
class MessagingConfig:
    broker: str = "rabbitmq"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    rabbitmq_heartbeat: float = 30.0
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_partitions: int = 8
    lost_copy_interval: float = 30.0


@dataclass(frozen=True)
class QueueConfig:
    visibility_timeout: float = 30.0
    claim_batch: int = 10
    poll_interval: float = 1.0


@dataclass(frozen=True)
class TasksConfig:
    stuck_threshold: float = 60.0
    heartbeat_interval: float = 5.0
    dispatch_interval: float = 1.0
    default_max_retries: int = 3
    retry_backoff_base: float = 2.0
    retry_backoff_max: float = 300.0
    default_timeout: float = 300.0
    pool_stall_timeout: float = 60.0
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiConfig:
    database_pool: int = 10
    database_timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    database_url: str = ""
    api: ApiConfig = field(default_factory=ApiConfig)
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    messaging: MessagingConfig = field(default_factory=MessagingConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)

    @property
    def uses_postgresql(self) -> bool:
        return self.database_url.startswith(("postgres://", "postgresql://"))


#: environment variable → (section, key); applied after the YAML file.
ENV_OVERRIDES: dict[str, tuple[str | None, str]] = {
    "DATABASE_URL": (None, "database_url"),
    "MIGRATION_MODE": ("migration", "mode"),
    "CONSUMER_RABBITMQ_PERCENT": ("migration", "consumer_rabbitmq_percent"),
    "DUAL_WRITE_TIMEOUT": ("migration", "dual_write_timeout"),
    "AUTO_ROLLBACK": ("migration", "auto_rollback"),
    "ERROR_THRESHOLD": ("migration", "error_threshold"),
    "LATENCY_THRESHOLD": ("migration", "latency_threshold"),
    "MIN_SAMPLES": ("migration", "min_samples"),
    "MESSAGING_BROKER": ("messaging", "broker"),
    "RABBITMQ_URL": ("messaging", "rabbitmq_url"),
    "RABBITMQ_HEARTBEAT": ("messaging", "rabbitmq_heartbeat"),
    "KAFKA_BOOTSTRAP_SERVERS": ("messaging", "kafka_bootstrap_servers"),
    "HELIX_LOST_COPY_INTERVAL": ("messaging", "lost_copy_interval"),
    "HELIX_VISIBILITY_TIMEOUT": ("queue", "visibility_timeout"),
    "HELIX_POLL_INTERVAL": ("queue", "poll_interval"),
    "HELIX_STUCK_THRESHOLD": ("tasks", "stuck_threshold"),
    "HELIX_HEARTBEAT_INTERVAL": ("tasks", "heartbeat_interval"),
    "HELIX_DISPATCH_INTERVAL": ("tasks", "dispatch_interval"),
    "HELIX_RETRY_BACKOFF_BASE": ("tasks", "retry_backoff_base"),
    "HELIX_DEFAULT_TIMEOUT": ("tasks", "default_timeout"),
    "HELIX_TASK_MODULES": ("tasks", "modules"),
    "HELIX_POOL_STALL_TIMEOUT": ("tasks", "pool_stall_timeout"),
    "HELIX_API_DATABASE_POOL": ("api", "database_pool"),
    "HELIX_API_DATABASE_TIMEOUT": ("api", "database_timeout"),
}


#: how a switch may be written, in the file or the environment.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` or raise a ConfigError naming ``key``. A switch
    must read as one of the words above: a misspelt ``AUTO_ROLLBACK=ture`` would otherwise turn
    the automatic rollback off without a word. Numbers must be finite (``float`` takes ``nan``,
    which no comparison refuses)."""
    kind = type(default)
    if kind is tuple:
        return _module_names(key, value)
    if kind is bool:
        word = str(value).strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ConfigError(f"{key}: expected true or false (or 1/0, yes/no, on/off), got {value!r}")
        return word in TRUE_WORDS
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}") from None
    if kind is float and not math.isfinite(converted):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return converted


def _module_names(key: str, value: Any) -> tuple[str, ...]:
    """A list of dotted module names: a YAML list, or one string separated by commas (the
    environment's form)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{key}: expected a list of module names, got {value!r}")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{key}: {name!r} is not a dotted module name")
    return names


def _section(cls: type, name: str, raw: dict[str, Any]) -> Any:
    defaults = cls()
    values = {}
    known = {f.name for f in fields(cls)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key; known keys are {sorted(known)}")
        values[key] = _coerce(f"{name}.{key}", value, getattr(defaults, key))
    return replace(defaults, **values)


def _validate(config: Config) -> None:
    if config.migration.mode not in MODES:
        raise ConfigError(f"migration.mode: {config.migration.mode!r} is not one of {MODES}")
    if not 0 <= config.migration.consumer_rabbitmq_percent <= 100:
        raise ConfigError("migration.consumer_rabbitmq_percent: must be between 0 and 100")
    if config.messaging.broker not in BROKERS:
        raise ConfigError(f"messaging.broker: {config.messaging.broker!r} is not one of {BROKERS}")
    if config.database_url and not config.database_url.startswith(("postgres://", "postgresql://", "sqlite://")):
        raise ConfigError("database_url: must start with postgresql:// or sqlite://")
    m = config.migration
    if m.dual_write_timeout <= 0 or m.error_threshold < 1 or m.latency_threshold <= 0 or m.min_samples < 1:
        raise ConfigError(
            "migration.dual_write_timeout, error_threshold, latency_threshold and min_samples: must be positive"
        )
    if config.messaging.kafka_partitions < 1:
        raise ConfigError("messaging.kafka_partitions: must be at least 1")
    if config.messaging.rabbitmq_heartbeat < 0:
        raise ConfigError("messaging.rabbitmq_heartbeat: must be 0 (off) or more")
    if config.messaging.lost_copy_interval <= 0:
        raise ConfigError("messaging.lost_copy_interval: must be positive")
    q, t = config.queue, config.tasks
    if q.visibility_timeout <= 0 or q.claim_batch < 1 or q.poll_interval <= 0:
        raise ConfigError("queue.visibility_timeout, queue.claim_batch and queue.poll_interval: must be positive")
    if t.heartbeat_interval <= 0 or t.dispatch_interval <= 0:
        raise ConfigError("tasks.heartbeat_interval and tasks.dispatch_interval: must be positive")
    if t.stuck_threshold <= t.heartbeat_interval:
        raise ConfigError(
            f"tasks.stuck_threshold: must be longer than tasks.heartbeat_interval ({t.heartbeat_interval} s): "
            "a running task's heartbeat is refreshed once per interval"
        )
    if t.default_max_retries < 0 or t.retry_backoff_max < 0 or t.retry_backoff_base < 1:
        raise ConfigError(
            "tasks.default_max_retries and tasks.retry_backoff_max: must be 0 or more; "
            "tasks.retry_backoff_base: must be 1 or more"
        )
    if t.default_timeout < 0:
        raise ConfigError("tasks.default_timeout: must be 0 (no limit) or more")
    if t.pool_stall_timeout <= 0:
        raise ConfigError("tasks.pool_stall_timeout: must be positive")
    if config.api.database_pool < 0 or config.api.database_timeout <= 0:
        raise ConfigError("api.database_pool: must be 0 or more; api.database_timeout: must be positive")


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Build the configuration from defaults, the YAML file and the environment."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(environ.get("HELIX_CONFIG", path or DEFAULT_CONFIG_FILE))
    raw: dict[str, Any] = {}
    if path.exists():
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    sections = {name: dict(raw.pop(name, None) or {}) for name in ("api", "migration", "messaging", "queue", "tasks")}
    top = {k: raw.pop(k) for k in list(raw) if k == "database_url"}
    if raw:
        raise ConfigError(f"{sorted(raw)}: unknown top-level keys in {path.name}")
    for env_name, (section, key) in ENV_OVERRIDES.items():
        if env_name in environ:
            (sections[section] if section else top)[key] = environ[env_name]
    config = Config(
        database_url=str(top.get("database_url") or ""),
        api=_section(ApiConfig, "api", sections["api"]),
        migration=_section(MigrationConfig, "migration", sections["migration"]),
        messaging=_section(MessagingConfig, "messaging", sections["messaging"]),
        queue=_section(QueueConfig, "queue", sections["queue"]),
        tasks=_section(TasksConfig, "tasks", sections["tasks"]),
    )
    _validate(config)
    return config


@lru_cache(maxsize=1)
def get_config() -> Config:
    """The process-wide configuration, loaded on first use."""
    return load_config()
