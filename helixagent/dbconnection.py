"""The connection class of the API's PostgreSQL pool: no call waits on the server for ever.

PostgreSQL's ``statement_timeout`` is kept by the server, so it cannot help when the server stops
answering while its sockets stay open (a stopped process, a stalled disk, a hung host): libpq
would wait on its socket for ever, and so would the request, and so would every later request
that borrows another pooled connection. Here each wait on the server (a query, a commit, a
rollback) gives up after ``api.database_timeout`` seconds. The connection is then closed, since
its state is unknown, and the error is an ``OperationalError``, which the API answers with 503
and a retry hint; the pool replaces the connection.

A wait that names its own timeout (``notifies()``, a cancellation) keeps it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.abc import PQGen

from helixagent.config import get_config

RV = TypeVar("RV")


class DatabaseTimeout(psycopg.OperationalError):
    """The server did not answer one call in time; the connection was closed."""


class BoundedConnection(psycopg.Connection[Any]):
    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is not None:
            return super().wait(gen, interval, timeout)
        limit = get_config().api.database_timeout
        try:
            return super().wait(gen, interval, limit)
        except errors._WaitTimeout:  # psycopg's own signal that ``timeout`` expired
            self.close()
            raise DatabaseTimeout(f"the database did not answer within {limit:g} s") from None
