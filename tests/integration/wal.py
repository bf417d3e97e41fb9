"""Counting PostgreSQL's WAL flushes, to tell a durable commit from one that does not wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection


def flushes(execute: Callable[[str], list[Any]]) -> int:
    """WAL flushes to disk so far (``pg_stat_wal.wal_sync``), counting those of the session that
    ``execute`` runs SQL on: a session reports its statistics lazily, and this makes it report now.
    A durable commit of a change flushes once; one that does not wait leaves it to the WAL writer."""
    execute("SELECT pg_stat_force_next_flush()")
    return int(execute("SELECT wal_sync FROM pg_stat_wal")[0][0])


def on_django(statement: str) -> list[Any]:
    """Run ``statement`` on Django's connection (for :func:`flushes`)."""
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return list(cursor.fetchall())
