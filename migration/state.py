"""The live migration state: stored in the database, with history, followed by every process.

Precedence (SPEC §4): defaults < ``configs/messaging.yaml`` < environment at start-up, then run-time
changes through the admin page, the API or ``manage.py``; the latest change wins.
:func:`bootstrap` applies the configuration at start-up only when it differs from what the last
start-up applied, so a restart with unchanged settings keeps a run-time change, and a restart
with a new ``MIGRATION_MODE`` is itself a change (recorded with source ``env``).

Every process reads the state through :func:`current`, cached for :data:`STATE_TTL` seconds, so a
change reaches all web and worker processes within two seconds without a restart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from helixagent.config import Config, get_config
from helixagent.logging import Outage, get_logger
from migration import modes, preflight
from migration.exceptions import BrokerUnreachable, InvalidValue, MigrationError
from migration.models import MigrationState, ModeChange

log = get_logger("migration.state")
STATE_TTL = 1.0
_outage = Outage(log, "migration.state")


@dataclass(frozen=True)
class Snapshot:
    """What a process needs to route a message."""

    mode: str
    rabbitmq_percent: int
    broker: str
    changed_at: datetime | None = None
    changed_by: str = ""
    reason: str = ""
    source: str = "default"


_cache: tuple[float, Snapshot] | None = None
_cache_lock = threading.RLock()  # re-entered when a start-up rollback re-enqueues tasks
_bootstrapped_pid = 0


def _snapshot(row: MigrationState, config: Config) -> Snapshot:
    return Snapshot(
        mode=row.mode,
        rabbitmq_percent=row.rabbitmq_percent,
        broker=config.messaging.broker,
        changed_at=row.changed_at,
        changed_by=row.changed_by,
        reason=row.reason,
        source=row.source,
    )


def current(max_age: float = STATE_TTL) -> Snapshot:
    """The state as this process last read it, re-read when older than ``max_age`` seconds.

    If the database cannot be read, the last known state is kept (and the configured one before
    any read), so routing goes on while PostgreSQL restarts."""
    global _cache
    now = time.monotonic()
    cached = _cache
    if cached is not None and now - cached[0] < max_age:
        return cached[1]
    with _cache_lock:
        try:
            if _bootstrapped_pid != os.getpid():
                bootstrap()
            row = MigrationState.objects.filter(pk=1).first()
            snapshot = _snapshot(row, get_config()) if row else configured()
            _outage.answered()
        except Exception as exc:  # keep routing on the last known state
            _outage.failed(exc)
            close_old_connections()
            snapshot = cached[1] if cached else configured()
        _cache = (now, snapshot)
        return snapshot


def forget() -> None:
    """Drop this process's cached state (after a change it made itself, and in tests)."""
    global _cache
    _cache = None


def configured(config: Config | None = None) -> Snapshot:
    config = config or get_config()
    return Snapshot(config.migration.mode, config.migration.consumer_rabbitmq_percent, config.messaging.broker)


def boot_settings(config: Config, environ: Mapping[str, str]) -> dict[str, list[Any]]:
    """What the configuration asks for at start-up: each value with where it came from."""
    return {
        "mode": [config.migration.mode, "env" if "MIGRATION_MODE" in environ else "config"],
        "rabbitmq_percent": [
            config.migration.consumer_rabbitmq_percent,
            "env" if "CONSUMER_RABBITMQ_PERCENT" in environ else "config",
        ],
    }


def bootstrap(config: Config | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Create the state row, or apply configured values that changed since the last start-up.

    A value counts as changed when it differs from the one the last start-up saw, or comes from
    a different place (``MIGRATION_MODE=legacy`` newly set is a change even if the file also says
    ``legacy``): that is how an operator rolls back with the environment and a restart."""
    global _bootstrapped_pid
    wanted = boot_settings(config or get_config(), os.environ if environ is None else environ)
    back = switched = False
    for _attempt in range(2):
        try:
            with transaction.atomic():
                row = MigrationState.objects.select_for_update().filter(pk=1).first()
                changed = [key for key, value in wanted.items() if row is None or row.boot_config.get(key) != value]
                if changed:
                    source = "env" if any(wanted[key][1] == "env" for key in changed) else "config"
                    previous = row.mode if row else ""
                    row = row or MigrationState(pk=1)
                    for key in changed:
                        setattr(row, key, wanted[key][0])
                    row.boot_config = wanted
                    reason = "initial configuration" if not previous else f"configuration changed: {', '.join(changed)}"
                    switched = bool(previous) and previous != row.mode
                    back = switched and row.mode == modes.LEGACY
                    _record(
                        row,
                        by="start-up",
                        reason=reason,
                        source=source,
                        previous=previous,
                        create=not previous,
                        rollback=back,
                    )
            break
        except IntegrityError:  # another process created the row first: read it again
            continue
    _bootstrapped_pid = os.getpid()
    forget()
    if switched:
        _after_switch()


def _record(
    row: MigrationState,
    *,
    by: str,
    reason: str,
    source: str,
    previous: str,
    create: bool = False,
    rollback: bool = False,
) -> None:
    row.changed_at, row.changed_by, row.reason, row.source = timezone.now(), by, reason, source
    row.save(force_insert=create)
    ModeChange.objects.create(
        mode=row.mode,
        previous_mode=previous,
        rabbitmq_percent=row.rabbitmq_percent,
        changed_at=row.changed_at,
        changed_by=by,
        reason=reason,
        source=source,
        rollback=rollback,
    )
    log.info(
        "migration.mode_changed",
        extra={
            "mode": row.mode,
            "previous_mode": previous,
            "rabbitmq_percent": row.rabbitmq_percent,
            "by": by,
            "reason": reason,
            "source": source,
        },
    )


def _locked_row() -> MigrationState:
    row = MigrationState.objects.select_for_update().filter(pk=1).first()
    if row is None:
        bootstrap()
        row = MigrationState.objects.select_for_update().get(pk=1)
    return row


def set_mode(mode: str, *, by: str, source: str, reason: str = "", force: bool = False) -> Snapshot:
    """Switch the mode after the transition rules and the preflight check of its brokers."""
    config = get_config()
    with transaction.atomic():
        row = _locked_row()
        try:
            modes.check_transition(row.mode, mode, force)
        except modes.TransitionRefused as exc:
            raise MigrationError(str(exc), {"mode": mode, "current": row.mode}) from None
        for broker in modes.required_brokers(mode, config.messaging.broker):
            error = preflight.reach(broker, config)
            if error:
                raise BrokerUnreachable(
                    f"{broker} is unreachable, so {mode} cannot start: {error}", {"broker": broker, "mode": mode}
                )
        previous = row.mode
        if previous != mode:
            row.mode = mode
            _record(row, by=by, reason=reason, source=source, previous=previous, rollback=mode == modes.LEGACY)
    forget()
    if previous != mode:
        _after_switch()
    return current()


def _after_switch() -> None:
    """Every mode change, however made, gives a PostgreSQL copy to the tasks it strands: those
    whose only copies are in a broker the new mode does not consume (:mod:`migration.stranded`)."""
    from migration import stranded

    stranded.reenqueue()


def roll_back(*, by: str, source: str, reason: str = "") -> bool:
    """Switch to ``legacy`` from any mode, without a preflight (PostgreSQL is always there);
    False when the mode already is ``legacy`` (one rollback per breach)."""
    with transaction.atomic():
        row = _locked_row()
        if row.mode == modes.LEGACY:
            return False
        previous, row.mode = row.mode, modes.LEGACY
        _record(row, by=by, reason=reason or "rollback", source=source, previous=previous, rollback=True)
    forget()
    _after_switch()
    return True


def set_split(percent: int, *, by: str, source: str, reason: str = "") -> Snapshot:
    """Move the dual_write consumer split (share of tasks executed from the RabbitMQ copy)."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise InvalidValue("rabbitmq_percent must be an integer from 0 to 100", {"rabbitmq_percent": percent})
    with transaction.atomic():
        row = _locked_row()
        if row.rabbitmq_percent != percent:
            row.rabbitmq_percent = percent
            _record(row, by=by, reason=reason, source=source, previous=row.mode)
    forget()
    return current()


def history(limit: int = 20) -> list[ModeChange]:
    return list(ModeChange.objects.all()[:limit])


def split_at(moment: datetime) -> int:
    """The RabbitMQ percentage that the history says was in force at ``moment``; the current one
    when the history does not reach back that far. Processes follow a change within
    :data:`STATE_TTL`, so a publish in that window may have used the one before."""
    latest_first = ModeChange.objects.filter(changed_at__lte=moment).order_by("-changed_at", "-id")
    percent = latest_first.values_list("rabbitmq_percent", flat=True).first()
    return current().rabbitmq_percent if percent is None else percent
