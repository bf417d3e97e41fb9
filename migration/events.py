"""The Kafka mirror of task lifecycle events: topic ``helixagent.events.tasks`` (SPEC §5).

In ``dual_write`` and ``messaging`` every event written to the task-event table is also produced
here, key = task id, by an idempotent producer with ``acks=all``. The table stays the record:
producing is asynchronous, and a Kafka outage costs mirrored events (each failure is logged),
never a task.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from typing import Any

from celery.signals import worker_process_shutdown
from confluent_kafka import KafkaError, Producer

from helixagent.config import get_config
from helixagent.logging import get_logger
from migration import modes, state
from migration.legs.kafka import EVENTS_TOPIC, producer_config

log = get_logger("migration.events")
MIRRORED_MODES = (modes.DUAL_WRITE, modes.MESSAGING)

#: Nobody waits on a mirrored event, so the producer gathers them for this long: the broker then
#: handles one request per process and interval instead of one or two per event, which under
#: load is most of Kafka's CPU.
LINGER_MS = 200

_producer: Producer | None = None
_pid = 0
_lock = threading.Lock()


def _get_producer() -> Producer:
    global _producer, _pid
    with _lock:
        if _producer is None or _pid != os.getpid():  # one producer per (forked) process
            _producer = Producer(producer_config(get_config().messaging.kafka_bootstrap_servers, LINGER_MS))
            _pid = os.getpid()
            atexit.register(_producer.flush, 5)
        return _producer


def _delivered(error: KafkaError | None, _message: Any) -> None:
    if error is not None:
        log.warning("migration.event_mirror_failed", extra={"error": str(error)})


def mirror(task_id: str, event: dict[str, Any]) -> None:
    """Produce one lifecycle event when the current mode mirrors events to Kafka."""
    if state.current().mode not in MIRRORED_MODES:
        return
    try:
        producer = _get_producer()
        value = json.dumps({"task_id": task_id, **event}, default=str).encode()
        producer.produce(EVENTS_TOPIC, key=task_id.encode(), value=value, on_delivery=_delivered)
        producer.poll(0)
    except (BufferError, Exception) as exc:  # a mirror must never fail the transition it reports
        log.warning("migration.event_mirror_failed", extra={"task_id": task_id, "error": str(exc)})


def flush(timeout: float = 10.0) -> int:
    """Wait for produced events to be acknowledged; returns how many are still in flight."""
    return _get_producer().flush(timeout) if _producer is not None else 0


def _flush_on_exit(**_: Any) -> None:
    """A pool process ends with ``os._exit``, which skips ``atexit``: hand over what it gathered."""
    flush(5.0)


worker_process_shutdown.connect(_flush_on_exit, weak=False)
