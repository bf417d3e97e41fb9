"""A task's time limits where Celery's own fall short.

Celery's prefork pool raises :class:`~celery.exceptions.SoftTimeLimitExceeded` in the process
running a task when its soft limit passes. The threads and solo pools ignore time limits:
there :class:`SoftLimit` raises the same exception in the thread running the handler, through
CPython's ``PyThreadState_SetAsyncExc``. It arrives at the next Python instruction, so a handler
blocked in a call into C (a socket read without a timeout) sees it when the call returns. A
thread cannot be ended from outside, so those pools have no hard limit.

A handler that goes on past its soft limit (a broad ``except`` swallows the exception) is ended
``HARD_LIMIT_GRACE`` seconds later by :class:`HardLimit`, in the prefork pool process itself,
rather than by Celery's hard limit. Celery's ends the process from outside, with SIGTERM and
SIGKILL 0.1 s apart. SIGKILL can then strike while the dying process writes its last message
to the pool's shared result queue, and the lock it holds on that queue stays taken for good.
Every other pool process then blocks at its next result, and the worker stops executing
anything while it keeps its messages. A process that ends itself does so while its handler
runs, never inside the pool's code. Celery's hard limit stays, ``CELERY_BACKSTOP`` seconds
later, for a process whose threads cannot run at all (a call into C that never lets go of
the interpreter); that process holds no pool lock either.

One watchdog thread per process serves every limit: it sleeps until the nearest deadline, and is
woken only when a new limit ends before that.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from types import TracebackType

from celery.exceptions import SoftTimeLimitExceeded

#: seconds a handler may run on past its soft limit before :class:`HardLimit` ends its process
HARD_LIMIT_GRACE = 5.0

#: seconds after that before Celery's own hard limit ends a prefork process from outside
CELERY_BACKSTOP = 30.0


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

    def fire(self) -> None:
        self.fired = True
        _raise_in(self.thread_id, SoftTimeLimitExceeded)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _watchdog.remove(self)  # from here on the watchdog raises nothing
        if self.fired:
            # Fired as the block ended: the exception is raised by now (inside this method,
            # so the caller sees it leave the block) or is still pending and is dropped here.
            _raise_in(self.thread_id, None)


class HardLimit:
    """``with HardLimit(seconds, end):`` calls ``end`` on the watchdog thread if the block is still
    running after ``seconds``. ``end`` should end the process; until it returns, the block
    cannot be left (the block's end waits for the watchdog), so the process ends inside it."""

    def __init__(self, seconds: float, end: Callable[[], None]) -> None:
        self.deadline = time.monotonic() + seconds
        self.end = end

    def __enter__(self) -> HardLimit:
        _watchdog.add(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _watchdog.remove(self)

    def fire(self) -> None:
        self.end()


class _Watchdog:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._limits: set[SoftLimit | HardLimit] = set()
        self._wakes_at: float | None = None  # the deadline the thread sleeps until (None: no limit)
        self._thread: threading.Thread | None = None

    def add(self, limit: SoftLimit | HardLimit) -> None:
        with self._changed:
            if self._thread is None or not self._thread.is_alive():  # the first limit of this process
                self._thread = threading.Thread(target=self._run, name="helix-time-limits", daemon=True)
                self._thread.start()
            self._limits.add(limit)
            if self._wakes_at is None or limit.deadline < self._wakes_at:
                self._changed.notify()

    def remove(self, limit: SoftLimit | HardLimit) -> None:
        with self._changed:
            self._limits.discard(limit)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for limit in [limit for limit in self._limits if limit.deadline <= now]:
                    self._limits.discard(limit)
                    limit.fire()  # under the lock: the block's end waits for it
                self._wakes_at = min((limit.deadline for limit in self._limits), default=None)
                self._changed.wait(None if self._wakes_at is None else self._wakes_at - now)


_watchdog = _Watchdog()
