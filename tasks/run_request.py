"""``run_task``'s Celery request: what Celery reports only in the worker's main process.

Two things happen to a request there, where ``run_task`` never runs:

* **Its pool process ends under it**: out of memory, a crash in native code, a SIGKILL, or
  Celery's backstop time limit (:mod:`tasks.timelimit`). Without a word from here the task row
  would stay ``running`` until the stuck sweep finds its heartbeat stale
  (``tasks.stuck_threshold``, a minute by default). The end is recorded as a failed attempt,
  retried with backoff while retries remain, else ``dead_letter``.
* **An operator revokes it** through Celery (``celery control revoke``, Flower's Revoke and
  Terminate buttons). Celery then acknowledges the message without running it, and the task
  would wait as ``queued`` with no copy anywhere. A revocation is recorded as a cancellation of
  the task while it waits. A terminated one cancels the execution it ended, unless the task does
  not allow cancelling while running (``config.allow_cancel: false``): then it is a failed
  attempt, as any ended process. A revocation without ``terminate`` leaves a running execution
  alone, as Celery does.

:class:`RunRequest` notes each; the maintenance thread records the notes at its next turn
(:func:`record`), because a request's callbacks run in the worker's consuming loop, which must
not wait on a database that does not answer. Notes still waiting when the worker itself dies are
lost with it; the stuck sweep covers their executions, and the lost-copy sweep
(:mod:`migration.lost`) gives a revoked waiting task its copy again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import Terminated
from celery.worker import state as worker_state
from celery.worker.request import Request

from helixagent.logging import get_logger
from tasks import service, states, transitions
from tasks.models import Task

log = get_logger("tasks.run_request")

#: what Celery reports when the process running a task is gone
ENDED_PROCESS = (WorkerLostError, Terminated, SystemExit, KeyboardInterrupt)


@dataclass(frozen=True)
class Ended:
    """An execution whose process is gone: the task and the ``worker_id`` its claim wrote."""

    task_id: str
    worker_id: str
    error: str


@dataclass(frozen=True)
class Revoked:
    """A request revoked through Celery; ``worker_id`` names the execution a terminate ended."""

    task_id: str
    reason: str
    worker_id: str = ""


#: noted by the consuming loop, taken by the maintenance thread (a deque's ends are thread-safe)
_noted: deque[Ended | Revoked] = deque()


class RunRequest(Request):  # type: ignore[misc]  # Celery ships no type hints
    """Celery's request, noting the executions that ended with their pool process and the
    requests revoked through Celery."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft and not worker_state.should_terminate:
            self._note_end(f"timed out: its process was ended at Celery's hard time limit ({timeout:g}s)")

    def on_failure(self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False) -> None:
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, ENDED_PROCESS) and not self._already_revoked:  # a revocation is noted as one
            self._note_end(f"worker lost: {type(exc).__name__}: {exc}")

    def _announce_revoked(self, reason: str, terminated: bool, signum: Any, expired: bool) -> None:
        # every revocation passes here; the ``task_revoked`` signal carries no pool process id,
        # which names the execution a terminate ended
        super()._announce_revoked(reason, terminated, signum, expired)
        if not self.args:
            return
        if terminated and self.worker_pid is not None:
            note = Revoked(str(self.args[0]), f"terminated through Celery (signal {signum})", self._worker_id())
        else:
            note = Revoked(str(self.args[0]), "expired" if expired else "revoked through Celery")
        _noted.append(note)

    def _note_end(self, error: str) -> None:
        if self.worker_pid is None or not self.args:  # never started in a pool process
            return
        _noted.append(Ended(str(self.args[0]), self._worker_id(), error))

    def _worker_id(self) -> str:
        return f"{self.hostname}:{self.worker_pid}"


def record() -> int:
    """Record every note (a maintenance step); returns how many tasks changed.

    An ended execution changes only a row still ``running`` under the noted ``worker_id``: one
    that stored its outcome before its process ended keeps it. A database error leaves the
    remaining notes for the next turn."""
    recorded = 0
    while _noted:
        note = _noted[0]
        if _record(note):
            recorded += 1
        _noted.popleft()
    return recorded


def _record(note: Ended | Revoked) -> bool:
    running = None
    if note.worker_id:  # the execution it names, if still running
        running = Task.objects.filter(pk=note.task_id, status=states.RUNNING, worker_id=note.worker_id).first()
    if isinstance(note, Revoked) and (running is None or running.config.get("allow_cancel") is not False):
        # the task while it waits (a terminate can land before the claim), or the ended execution
        if transitions.cancel(note.task_id, reason=note.reason, waiting_only=running is None) is None:
            return False  # it ran from another copy, or ended before the revocation
        log.warning("task.revoked", extra={"task_id": note.task_id, "reason": note.reason})
        return True
    if running is None:
        return False
    error = note.error if isinstance(note, Ended) else f"{note.reason}; this task does not allow cancelling it"
    if transitions.fail(running, error, permanent=False, delay=service.retry_delay(running)) is None:
        return False
    log.warning("task.pool_process_ended", extra={"task_id": note.task_id, "error": error})
    return True
