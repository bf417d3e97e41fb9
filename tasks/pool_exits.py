"""Executions whose pool process ended under them.

A prefork pool process can die in the middle of a task: out of memory, a crash in native code,
a SIGKILL, or Celery's backstop time limit (:mod:`tasks.timelimit`). Celery reports such an end
in the worker's main process, where ``run_task`` never ran, so without a word from there the
task row would stay ``running`` until the stuck sweep finds its heartbeat stale
(``tasks.stuck_threshold``, a minute by default). :class:`RunRequest`, the request class of
``run_task``, notes each end; the maintenance thread records it at its next turn as a failed
attempt, retried with backoff while retries remain, else ``dead_letter``.

The notes wait for the maintenance thread because a request's callbacks run in the worker's
consuming loop, which must not wait on a database that does not answer. Notes still waiting
when the worker itself dies are lost with it; the stuck sweep covers those executions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import Terminated
from celery.worker import state as worker_state
from celery.worker.request import Request

from helixagent.logging import get_logger
from tasks import service, states, transitions
from tasks.models import Task

log = get_logger("tasks.pool_exits")

#: what Celery reports when the process running a task is gone
ENDED_PROCESS = (WorkerLostError, Terminated, SystemExit, KeyboardInterrupt)


@dataclass(frozen=True)
class Ended:
    """An execution whose process is gone: the task and the ``worker_id`` its claim wrote."""

    task_id: str
    worker_id: str
    error: str


#: noted by the consuming loop, taken by the maintenance thread (a deque's ends are thread-safe)
_ended: deque[Ended] = deque()


class RunRequest(Request):  # type: ignore[misc]  # Celery ships no type hints
    """Celery's request, noting the executions that ended with their pool process."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft and not worker_state.should_terminate:
            self._note(f"timed out: its process was ended at Celery's hard time limit ({timeout:g}s)")

    def on_failure(self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False) -> None:
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, ENDED_PROCESS):
            self._note(f"worker lost: {type(exc).__name__}: {exc}")

    def _note(self, error: str) -> None:
        if self.worker_pid is None or not self.args:  # never started in a pool process
            return
        _ended.append(Ended(str(self.args[0]), f"{self.hostname}:{self.worker_pid}", error))


def record() -> int:
    """Record every noted end (a maintenance step); returns how many executions it ended.

    Only a row still ``running`` under the noted ``worker_id`` changes: an execution that stored
    its outcome before its process ended keeps it. A database error leaves the remaining notes
    for the next turn."""
    recorded = 0
    while _ended:
        ended = _ended[0]
        task = Task.objects.filter(pk=ended.task_id, status=states.RUNNING, worker_id=ended.worker_id).first()
        if task is not None and transitions.fail(task, ended.error, permanent=False, delay=service.retry_delay(task)):
            recorded += 1
            log.warning("task.pool_process_ended", extra={"task_id": ended.task_id, "error": ended.error})
        _ended.popleft()
    return recorded
