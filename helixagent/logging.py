"""JSON-lines log formatting: one event per line with a stable ``event`` name; helpers for repeats and outages."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

_DIGITS = re.compile(r"\d+")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as JSON; ``extra`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RepeatFilter(logging.Filter):
    """Let through the first of a run of like lines, then one per ``window`` seconds.

    Lines are alike when they differ only in their digits (addresses, client numbers, times).
    A line let through after some were held back carries ``repeated``: how many. Meant for
    clients that log a line per attempt while a service is away: librdkafka logs each refused
    connection, several a second per client, during a Kafka outage."""

    #: at most this many kinds of line are remembered; older ones are forgotten first
    KINDS = 256

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._kinds: dict[str, tuple[float, int]] = {}  # kind → (when one was last let through, held since)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = f"{record.levelno}:{_DIGITS.sub('#', record.getMessage())}"
        now = self.clock()
        with self._lock:
            last, held = self._kinds.pop(kind, (None, 0))
            if last is not None and now - last < self.window:
                self._kinds[kind] = (last, held + 1)
                return False
            self._kinds[kind] = (now, 0)
            while len(self._kinds) > self.KINDS:
                del self._kinds[next(iter(self._kinds))]
        if held:
            record.repeated = held
        return True


class Outage:
    """Logs when something stops answering and when it answers again, instead of every failed
    call in between: a worker's loops call the database several times a second.

    ``<event>_unavailable`` (warning) at the first failure, with its error; ``<event>_back``
    (info) at the first success after it, with the seconds and failures in between. One thread
    at a time: each loop keeps its own, or calls it under its lock."""

    def __init__(self, log: logging.Logger, event: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.event = event
        self.clock = clock
        self.since: float | None = None
        self.failures = 0

    def failed(self, error: BaseException, **extra: object) -> None:
        self.failures += 1
        if self.since is None:
            self.since = self.clock()
            self.log.warning(f"{self.event}_unavailable", extra={"error": str(error), **extra})

    def answered(self) -> None:
        if self.since is None:
            return
        seconds = round(self.clock() - self.since, 1)
        self.log.info(f"{self.event}_back", extra={"after_seconds": seconds, "failures": self.failures})
        self.since = None
        self.failures = 0


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``helixagent`` tree, so the JSON handlers apply."""
    return logging.getLogger(f"helixagent.{name}")
