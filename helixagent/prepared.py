"""Hot statements that PostgreSQL parses and plans once per connection instead of once per call.

Django binds parameters on the client by default: every call sends new SQL text, which the
server parses, analyses and plans again. A submit, a claim and an outcome each run one statement
of a fixed shape thousands of times per second, so :func:`fetchone` runs them as prepared
statements with server-side parameters on Django's own connection (same transaction, same
error translation). Elsewhere (SQLite) it is a plain Django cursor.

:data:`ASYNC_COMMIT` marks the hot writes that need not wait for the WAL flush when they commit.

Prepared statements live in the server session: a transaction-pooling proxy between the
application and PostgreSQL (PgBouncer in ``transaction`` mode) must be given session pooling.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from django.db import connection

_PLACEHOLDER = re.compile(r"%[s%]")


@functools.lru_cache(maxsize=256)
def numbered(statement: str) -> str:
    """``statement`` with its ``%s`` placeholders as ``$1, $2, …`` (and ``%%`` as ``%``).

    Converted once per statement text: psycopg caches its own conversion only for statements of
    at most 50 parameters, and a gathered submit has more, so it would parse the text every call.
    """
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        if match.group() == "%%":
            return "%"
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(replace, statement)


def fetchone(statement: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Execute ``statement`` (``%s`` placeholders) and return its first row, if any."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            row = cursor.fetchone()
        return tuple(row) if row is not None else None
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.RawCursor(connection.connection) as cursor:
        cursor.execute(numbered(statement), params, prepare=True)
        return cursor.fetchone()


#: A condition to add to the WHERE clause of a write that need not wait for its WAL to reach disk
#: when it commits: it sets ``synchronous_commit = off`` for the statement's own transaction. Only
#: for writes whose loss in a database crash is harmless, never for a task's submit or outcome.
#: PostgreSQL flushes its WAL in order, so the next durable commit of any session makes such a
#: write durable too; a crash can lose at most the last three ``wal_writer_delay`` (600 ms by
#: default) of them.
ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true) IS NOT NULL"
