"""The bell that wakes a consuming loop whose prefetch window is full.

With the threads pool a task's acknowledgement comes from the pool thread that ran it, while
the consuming thread sleeps in its idle wait: without a wake-up it would take the next message
only at its next poll, and a backlog would drain one prefetch window per ``polling_interval``.
A worker's shutdown rings every bell of its process (:func:`ring_all`), so a loop waiting for
work sees the stop at once.
"""

from __future__ import annotations

import contextlib
import socket
import weakref

_bells: weakref.WeakSet[Bell] = weakref.WeakSet()


class Bell:
    """A socket pair: other threads call :meth:`ring`; the consuming thread waits on
    :meth:`fileno` among its other sockets, then calls :meth:`clear`.

    It rings only while :attr:`armed`, which the consuming thread sets when its window is
    full, so the acknowledgements of a consumer with room to spare cost no system call."""

    def __init__(self) -> None:
        self._inbox, self._outbox = socket.socketpair()
        self._inbox.setblocking(False)
        self._outbox.setblocking(False)
        self.armed = False
        _bells.add(self)

    def ring(self) -> None:
        if self.armed:
            self.armed = False
            self._send()

    def _send(self) -> None:
        with contextlib.suppress(OSError):  # the buffer is full (it rang already) or the bell is closed
            self._outbox.send(b"\0")

    def fileno(self) -> int:
        return self._inbox.fileno()

    def clear(self) -> None:
        """Disarm and take every ring that came, so the next wait is not cut short by an old one."""
        self.armed = False
        try:
            while self._inbox.recv(64):
                pass
        except OSError:  # nothing left to read
            pass

    def close(self) -> None:
        self._inbox.close()
        self._outbox.close()


def ring_all() -> None:
    """Ring every bell of this process, armed or not; safe to call from a signal handler."""
    for bell in list(_bells):
        bell._send()
