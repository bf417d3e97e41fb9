"""Hot statements that PostgreSQL parses and plans once per connection instead of once per call.

Django binds parameters on the client by default: every call sends new SQL text, which the
server parses, analyses and plans again. A submit, a claim and an outcome each run one statement
of a fixed shape thousands of times per second, so :func:`fetchone` runs them as prepared
statements with server-side parameters on Django's own connection (same transaction, same
error translation). Elsewhere (SQLite) it is a plain Django cursor.

Prepared statements live in the server session: a transaction-pooling proxy between the
application and PostgreSQL (PgBouncer in ``transaction`` mode) must be given session pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from django.db import connection


def fetchone(statement: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Execute ``statement`` (``%s`` placeholders) and return its first row, if any."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            row = cursor.fetchone()
        return tuple(row) if row is not None else None
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(statement, params, prepare=True)
        return cursor.fetchone()
