"""The Celery task that executes HelixAgent tasks, and the worker-side loops that support it.

``run_task`` claims the task row (:func:`tasks.transitions.claim`), runs its handler, and records
the outcome for that execution only. The message is acknowledged after the outcome is stored
(``acks_late``), so a worker killed mid-task leaves the message to be delivered again after the
queue's visibility timeout; the claim makes sure only one execution completes. A copy that finds
the row still claimed by the dead worker does nothing: the stuck sweep recovers the task once its
heartbeat stays stale, and the dispatcher publishes it again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.concurrency import get_implementation
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_init, worker_ready, worker_shutdown, worker_shutting_down
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, close_old_connections, connections
from django.utils import timezone

from helixagent.config import get_config
from helixagent.logging import Outage, get_logger
from migration import envelope, guard, lost, modes, outbox, stranded, verifier
from migration.pgqueue import transport as pgqueue
from tasks import jsonvalue, pool_stall, run_request, service, states, transitions
from tasks.exceptions import PermanentTaskFailure
from tasks.models import Task
from tasks.registry import get_task_type
from tasks.stuck import StaleWatch
from tasks.timelimit import HARD_LIMIT_GRACE, HardLimit, SoftLimit

log = get_logger("tasks.runner")

#: what a lost or refused database connection raises
DATABASE_ERRORS = (OperationalError, InterfaceError)

#: seconds between attempts to store an outcome while the database is unreachable
OUTCOME_RETRY_SECONDS = 1.0


class _Context:
    """The :class:`tasks.registry.TaskContext` of one execution."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.task_id = str(task.pk)
        self.attempt = task.retry_count + 1
        self._cancel_checked = 0.0
        self._cancelled = False
        self._told_away = False

    def progress(self, percent: int, message: str = "") -> None:
        """Store progress; while the database is unreachable the report is dropped, not raised:
        progress is advisory, and a handler's work should not end over it."""
        try:
            transitions.record_progress(self.task, percent, message)
        except DATABASE_ERRORS as exc:
            self._database_away(exc, "progress")

    def cancelled(self) -> bool:
        """Asks the database at most once a second; while it is unreachable the last answer stands."""
        now = time.monotonic()
        if now - self._cancel_checked >= 1.0:
            self._cancel_checked = now
            try:
                status = Task.objects.filter(pk=self.task.pk).values_list("status", flat=True).first()
            except DATABASE_ERRORS as exc:
                self._database_away(exc, "cancel_check")
            else:
                self._cancelled = status == states.CANCELLED
        return self._cancelled

    def _database_away(self, exc: Exception, call: str) -> None:
        if not self._told_away:  # once per execution: a handler may report every second
            self._told_away = True
            log.warning("task.progress_unsaved", extra={"task_id": self.task_id, "call": call, "error": str(exc)})
        close_old_connections()  # the next call connects afresh


class _Heartbeat:
    """One thread per process refreshing ``heartbeat_at`` of the executions it runs."""

    def __init__(self) -> None:
        self.active: set[uuid.UUID] = set()
        self.lock = threading.Lock()
        self.pid = 0

    def add(self, execution_id: uuid.UUID) -> None:
        if self.pid != os.getpid():  # first task in this (possibly forked) process
            self.pid = os.getpid()
            self.active = set()
            threading.Thread(target=self._loop, name="helix-heartbeat", daemon=True).start()
        with self.lock:
            self.active.add(execution_id)

    def remove(self, execution_id: uuid.UUID) -> None:
        with self.lock:
            self.active.discard(execution_id)

    def _loop(self) -> None:
        interval = get_config().tasks.heartbeat_interval
        database = Outage(log, "task.heartbeat_database")
        while True:
            time.sleep(interval)
            with self.lock:
                ids = list(self.active)
            if not ids:
                continue
            try:
                transitions.heartbeat(ids)
                database.answered()
            except DATABASE_ERRORS as exc:
                database.failed(exc, executions=len(ids))
                close_old_connections()
            except Exception:
                log.warning("task.heartbeat_failed", exc_info=True)
                close_old_connections()


_heartbeat = _Heartbeat()

#: which time limits the runner enforces itself, by the worker's pool: the soft limit on the
#: threads and solo pools, which ignore Celery's; on prefork, whose pool processes get Celery's
#: soft limit, the hard one (:mod:`tasks.timelimit` says why)
_runner_limits = ""

#: seconds a pool process ending at a hard limit waits to store its task's failure
HARD_LIMIT_STORE_WAIT = 5.0


@worker_init.connect
def _note_pool(sender: Any, **_: Any) -> None:
    global _runner_limits
    module = get_implementation(sender.pool_cls).__module__
    if module in ("celery.concurrency.thread", "celery.concurrency.solo"):
        _runner_limits = "soft"
    elif module == "celery.concurrency.prefork":
        _runner_limits = "hard"


def _time_limit(task: Task, limit: float | None) -> contextlib.AbstractContextManager[object]:
    if limit and _runner_limits == "soft":
        return SoftLimit(limit)
    if limit and _runner_limits == "hard":
        return HardLimit(limit + HARD_LIMIT_GRACE, lambda: _end_process(task, limit))
    return contextlib.nullcontext()


def _end_process(task: Task, limit: float) -> None:
    """End this pool process, whose handler ran on past its soft limit, after storing the failure
    (on a thread of its own, waited for a few seconds: the database may not answer). If it is not
    stored, the worker's main process stores it when the pool reports the process lost
    (:mod:`tasks.run_request`), and failing that the stuck sweep."""
    error = f"timed out after {limit}s; the handler went on, so its process was ended {HARD_LIMIT_GRACE:g}s later"
    log.error("task.hard_time_limit", extra={"task_id": str(task.pk), "limit": limit})

    def store() -> None:
        try:
            transitions.fail(task, error, permanent=False, delay=service.retry_delay(task))
        except Exception as exc:
            log.warning("task.outcome_unsaved", extra={"task_id": str(task.pk), "error": str(exc)})

    storing = threading.Thread(target=store, name="helix-hard-limit", daemon=True)
    storing.start()
    storing.join(HARD_LIMIT_STORE_WAIT)
    os._exit(os.EX_SOFTWARE)


def execute(task: Task) -> Task | None:
    """Run the claimed ``task``'s handler and store its outcome; returns the updated row."""
    if task.deadline and task.deadline < timezone.now():
        return transitions.fail(task, "deadline passed before the task started", permanent=True, delay=0)
    assert task.execution_id is not None, "execute() needs a claimed task"
    _heartbeat.add(task.execution_id)
    try:
        store = _run_handler(task)
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:  # the outcome would join it, never committed
            log.warning("task.handler_left_transaction", extra={"task_id": str(task.pk)})
            _replace_connection()
        return _store_outcome(task, store)
    finally:
        _heartbeat.remove(task.execution_id)


def _run_handler(task: Task) -> Callable[[], Task | None]:
    """Run the handler; return the call that stores its outcome."""
    limit = service.time_limit(task)
    try:
        with _time_limit(task, limit):
            result = get_task_type(task.task_type).handler(_Context(task), task.payload)
    except PermanentTaskFailure as exc:
        error = str(exc)
        return lambda: transitions.fail(task, error, permanent=True, delay=0)
    except SoftTimeLimitExceeded:
        _replace_connection()
        error = f"timed out after {limit}s"
        return lambda: transitions.fail(task, error, permanent=False, delay=service.retry_delay(task))
    except Exception as exc:
        log.info("task.handler_error", extra={"task_id": str(task.pk), "error": repr(exc)})
        error = f"{type(exc).__name__}: {exc}"
        return lambda: transitions.fail(task, error, permanent=False, delay=service.retry_delay(task))
    try:
        jsonvalue.encode(result)
    except ValueError as exc:  # the same result would come back at every attempt: fail at once
        error = f"the result cannot be stored: {exc}"
        return lambda: transitions.fail(task, error, permanent=True, delay=0)
    return lambda: transitions.complete(task, result)


def _replace_connection() -> None:
    """Give this thread a new database connection, for when the old one may be in a state that
    no call recovers from: a time limit struck in the middle of a query or of Django's own
    transaction handling (which can leave it marked inside a transaction that no longer
    exists), the handler left a transaction open, or storing an outcome failed."""
    old = connections[DEFAULT_DB_ALIAS]
    if old.connection is not None:
        with contextlib.suppress(Exception):  # closing is all that is left to do with it
            old.connection.close()
    del connections[DEFAULT_DB_ALIAS]  # the next call opens a new one


def _store_outcome(task: Task, store: Callable[[], Task | None]) -> Task | None:
    """Store an outcome, waiting for the database as long as it is unreachable.

    The handler has run: giving up would leave the claim to the stuck sweep, which would run the
    task again. The caller's heartbeat goes on meanwhile, so the sweep leaves this live execution
    alone once the database answers. A retry after a commit whose answer was lost finds the
    outcome already stored and changes nothing (the update names this execution and ``running``).
    """
    waiting_since = None
    attempts = 0
    while True:
        attempts += 1
        try:
            stored = store()
        except DATABASE_ERRORS as exc:
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.warning("task.outcome_waiting", extra={"task_id": str(task.pk), "error": str(exc)})
            _replace_connection()
            time.sleep(OUTCOME_RETRY_SECONDS)
            continue
        if waiting_since is not None:
            waited = round(time.monotonic() - waiting_since, 1)
            log.info(
                "task.outcome_stored", extra={"task_id": str(task.pk), "after_seconds": waited, "attempts": attempts}
            )
        return stored


def _another_copy(task_id: str, source: str) -> None:
    """A copy that found nothing to claim: either the task ran from another copy (which counts
    as the shadow being seen) or there is no such task at all (an orphan copy)."""
    if not Task.objects.filter(pk=task_id).update(shadow_checked_at=timezone.now()):
        verifier.record("orphan_copy", task_id, source, "a copy without a task row")


def _check_copy(task: Task, source: str, request: Any) -> None:
    """The executing copy's headers must agree with its row (type and payload checksum)."""
    if not get_config().migration.verify_consistency:
        return
    headers = {name: getattr(request, name, None) for name in (modes.TYPE_HEADER, modes.CHECKSUM_HEADER)}
    mismatch = verifier.problem(task.task_type, task.payload, headers)
    if mismatch:
        verifier.record("mismatch", str(task.pk), source, mismatch)


@shared_task(name="helixagent.run_task", bind=True, acks_late=True, ignore_result=True, Request=run_request.RunRequest)
def run_task(self: Any, *args: Any, **kwargs: Any) -> str:
    """Claim and execute one task; a copy that finds the task already claimed does nothing.

    When the database cannot be reached before the handler runs, the message is rejected back
    to the queue rather than acknowledged, so the task is not lost; a claim it may have made is
    recovered as stuck. Once the handler has run, its outcome waits for the database instead.
    """
    given = _task_id_argument(args, kwargs)
    if envelope.task_id(given) is None:  # no HelixAgent producer wrote this message:
        arguments = f"{(args, kwargs)!r:.200}"
        log.error("task.invalid_message", extra={"arguments": arguments, "message_id": self.request.id})
        # a claim's query would raise on it, or the call itself: Celery would acknowledge either
        # as a failed task
        raise Reject(f"not one task id: {arguments}", requeue=False)  # dead-lettered where the broker can
    task_id = str(given)
    close_old_connections()  # as at the start of a request: drop broken or expired connections
    worker_id = f"{self.request.hostname}:{os.getpid()}"
    try:
        source = getattr(self.request, modes.SOURCE_HEADER, None) or modes.POSTGRESQL
        task = transitions.claim(task_id, worker_id, source)
        if task is None:
            _another_copy(task_id, source)
            log.info("task.claim_skipped", extra={"task_id": task_id, "worker": worker_id})
            return "skipped"
        _check_copy(task, source, self.request)
        outcome = execute(task)
    except DATABASE_ERRORS as exc:
        log.warning("task.database_unavailable", extra={"task_id": task_id, "error": str(exc)})
        close_old_connections()
        time.sleep(1.0)  # do not spin through the queue while the database is away
        raise Reject(str(exc), requeue=True) from None  # Celery logs it: the line above says why
    return outcome.status if outcome else "superseded"


def _task_id_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``run_task``'s one argument, however the message passes it; None for any other arguments."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and list(kwargs) == ["task_id"]:
        return kwargs["task_id"]
    return None


_stale_watch = StaleWatch()


def _recover_stuck() -> None:
    """Recover the executions whose heartbeat stayed stale across two sweeps two heartbeat
    intervals apart: a live worker heartbeats within one interval once the database answers."""
    cfg = get_config().tasks
    found = transitions.stale_executions(cfg.stuck_threshold)
    for stale in _stale_watch.confirmed(found, time.monotonic(), confirm_after=2 * cfg.heartbeat_interval):
        recovered = transitions.recover_execution(stale, cfg.stuck_threshold)
        if recovered is not None:
            log.warning(
                "task.recovered_stuck",
                extra={"task_id": str(stale.task_id), "status": recovered.status, "retry_count": recovered.retry_count},
            )


def _relay_outbox() -> None:
    with service.producer() as current:
        outbox.relay(current.channel)


def _maintenance_loop(stop: threading.Event) -> None:
    """Every worker, about once a second (row locks keep workers apart): record the executions
    whose pool process ended and the requests revoked through Celery (:mod:`tasks.run_request`),
    recover stuck tasks, publish due ones, relay the outbox, verify dual_write copies, watch for
    a rollback breach, and every few seconds copy to PostgreSQL the tasks a mode change stranded
    in a broker.
    Each step fails on its own: a broken one does not stop the others. A turn ends at the first
    step the database does not answer; the outage is logged when it begins and when it ends."""
    cfg = get_config().tasks
    steps: list[tuple[Callable[[], object], float]] = [
        (_recover_stuck, min(cfg.stuck_threshold / 2, cfg.heartbeat_interval)),
        (service.dispatch_due, 0.0),
        # after a step that reads the database at every turn: this one reads it only when a
        # process ended or a request was revoked, and a step that succeeds tells the outage log
        # the database is back
        (run_request.record, 0.0),
        (_relay_outbox, 0.0),
        (verifier.verify_due, 0.0),
        (guard.check, 0.0),
        (stranded.reenqueue, stranded.SWEEP_EVERY),
    ]
    last_run = [0.0] * len(steps)
    database = Outage(log, "task.maintenance_database")
    while not stop.wait(cfg.dispatch_interval):
        for index, (step, every) in enumerate(steps):
            if time.monotonic() - last_run[index] < every:
                continue
            last_run[index] = time.monotonic()
            try:
                step()
                database.answered()
            except DATABASE_ERRORS as exc:  # every step needs it: wait for the next turn
                database.failed(exc, step=step.__name__)
                close_old_connections()
                break
            except Exception:
                log.warning("task.maintenance_failed", extra={"step": step.__name__}, exc_info=True)
                close_old_connections()


def _lost_copy_loop(stop: threading.Event) -> None:
    """Every ``messaging.lost_copy_interval``: copy to PostgreSQL the tasks whose only copy the
    PostgreSQL queue or a broker lost (:mod:`migration.lost`). A thread of its own, because
    reading a broker that does not answer takes seconds, which would hold back stuck recovery
    and the rollback guard. It lets go of its database connection between turns; the
    maintenance loop logs database outages."""
    every = get_config().messaging.lost_copy_interval
    while not stop.wait(every):
        for step in (lost.restore_postgresql_copies, lost.reenqueue):
            try:
                step()
            except DATABASE_ERRORS:
                break
            except Exception:
                log.warning("task.maintenance_failed", extra={"step": f"lost.{step.__name__}"}, exc_info=True)
        connections[DEFAULT_DB_ALIAS].close()


_stop_maintenance = threading.Event()


@worker_ready.connect
def _start_maintenance(sender: Any, **_: Any) -> None:
    threading.Thread(target=_maintenance_loop, args=(_stop_maintenance,), name="helix-maintenance", daemon=True).start()
    threading.Thread(target=_lost_copy_loop, args=(_stop_maintenance,), name="helix-lost-copies", daemon=True).start()
    if _runner_limits == "hard":  # prefork: billiard's pool, whose processes share locks
        watch = (sender.pool._pool, get_config().tasks.pool_stall_timeout, _stop_maintenance)
        threading.Thread(target=pool_stall.watch, args=watch, name="helix-pool-watch", daemon=True).start()
        if sender.pool.putlocks:  # a task handed to a full pool would hold the consuming loop
            slots = sender.pool._pool._putlock  # a semaphore of the pool's free processes
            pgqueue.deliver_while(lambda: slots._value > 0)


@worker_shutting_down.connect
def _stop_consuming(**_: Any) -> None:
    """On SIGTERM, SIGINT or SIGQUIT (sent in the signal handler): take no new message, so the
    worker goes on to finish the tasks it runs instead of waiting on an idle queue first."""
    pgqueue.stop_consuming()


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    _stop_maintenance.set()
