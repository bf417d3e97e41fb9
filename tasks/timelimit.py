"""A task's time limit on pools that enforce none (threads, solo).

Celery's prefork pool raises :class:`~celery.exceptions.SoftTimeLimitExceeded` in the process
running a task when its soft limit passes, and ends the process at the hard limit. The threads
and solo pools ignore both limits. :class:`SoftLimit` raises the same exception in the thread
running the handler, through CPython's ``PyThreadState_SetAsyncExc``: it arrives at the next
Python instruction, so a handler blocked in a call into C (a socket read without a timeout)
sees it when the call returns. A thread cannot be ended from outside, so there is no hard limit.

One watchdog thread per process serves every limit: it sleeps until the nearest deadline, and is
woken only when a new limit ends before that.
"""

from __future__ import annotations

import ctypes
import threading
import time
from types import TracebackType

from celery.exceptions import SoftTimeLimitExceeded


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    """Schedule ``exception`` in thread ``thread_id``, or with None drop one not yet raised."""
    pending = ctypes.py_object(exception) if exception is not None else None  # None: a NULL pointer
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), pending)


class SoftLimit:
    """``with SoftLimit(seconds):`` raises :class:`SoftTimeLimitExceeded` in the calling thread if
    the block is still running after ``seconds``, and never once the block has ended."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.thread_id = threading.get_ident()
        self.fired = False

    def __enter__(self) -> SoftLimit:
        _watchdog.add(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _watchdog.remove(self)  # from here on the watchdog raises nothing
        if self.fired:
            # Fired as the block ended: the exception is raised by now (inside this method,
            # so the caller sees it leave the block) or is still pending and is dropped here.
            _raise_in(self.thread_id, None)


class _Watchdog:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._limits: set[SoftLimit] = set()
        self._wakes_at: float | None = None  # the deadline the thread sleeps until (None: no limit)
        self._thread: threading.Thread | None = None

    def add(self, limit: SoftLimit) -> None:
        with self._changed:
            if self._thread is None or not self._thread.is_alive():  # the first limit of this process
                self._thread = threading.Thread(target=self._run, name="helix-time-limits", daemon=True)
                self._thread.start()
            self._limits.add(limit)
            if self._wakes_at is None or limit.deadline < self._wakes_at:
                self._changed.notify()

    def remove(self, limit: SoftLimit) -> None:
        with self._changed:
            self._limits.discard(limit)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for limit in [limit for limit in self._limits if limit.deadline <= now]:
                    self._limits.discard(limit)
                    limit.fired = True
                    _raise_in(limit.thread_id, SoftTimeLimitExceeded)
                self._wakes_at = min((limit.deadline for limit in self._limits), default=None)
                self._changed.wait(None if self._wakes_at is None else self._wakes_at - now)


_watchdog = _Watchdog()
