"""Writes gathered into one SQL statement, so accepting a task costs one round trip (PostgreSQL).

A submit writes a task row, its first events, its queue message and, in ``dual_write`` and
``messaging``, an outbox record. Run one by one inside a transaction that is up to six round
trips (``BEGIN``, an ``INSERT`` per table, ``COMMIT``). Inside :func:`gather`, the queue store and the outbox
hand their ``INSERT`` to the current :class:`Statement` instead of running it; :meth:`Statement.run`
then executes everything as the members of one data-modifying ``WITH`` in autocommit, which is
its own transaction: all rows commit together or none does. Work that must follow the commit
(handing a broker copy to the outbox publisher) is registered with :meth:`Statement.after`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection
from django.db.models import Model
from django.db.models.fields import AutoFieldMixin

from helixagent import prepared

_local = threading.local()


class Statement:
    """The members of one ``WITH … SELECT`` statement, and what to do once it has committed."""

    def __init__(self) -> None:
        self.members: list[tuple[str, str, list[Any]]] = []  # (name, INSERT, its parameters)
        self.returning: list[str] = []  # members whose ``RETURNING id`` the final SELECT reads
        self._after: list[Callable[[dict[str, Any]], None]] = []

    def add(self, statement: str, params: list[Any] | tuple[Any, ...], returning: bool = False) -> str:
        """Add one ``INSERT`` (``%s`` placeholders); returns its member name."""
        name = f"w{len(self.members)}"
        if returning:
            statement += " RETURNING id"
            self.returning.append(name)
        self.members.append((name, statement, list(params)))
        return name

    def insert(self, *objs: Model, returning: bool = False) -> str:
        """Add the ``INSERT`` of new rows of one model, with Django's own value conversions."""
        meta = objs[0]._meta
        fields = [f for f in meta.concrete_fields if not isinstance(f, AutoFieldMixin)]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(str(f.column)) for f in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for obj in objs for f in fields]
        table = quote(str(meta.db_table))
        rows = ", ".join([row] * len(objs))
        return self.add(f"INSERT INTO {table} ({columns}) VALUES {rows}", params, returning=returning)

    def after(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(returned ids by member name)`` once the statement has committed."""
        self._after.append(callback)

    def run(self) -> dict[str, Any]:
        """Execute every member as one statement and return the ids members returned."""
        if connection.in_atomic_block:
            raise RuntimeError("a gathered statement is its own transaction; run it outside atomic()")
        withs = ", ".join(f"{name} AS ({statement})" for name, statement, _ in self.members)
        select = ", ".join(f"(SELECT id FROM {name})" for name in self.returning) or "1"
        params = [param for _name, _statement, member_params in self.members for param in member_params]
        row = prepared.fetchone(f"WITH {withs} SELECT {select}", params)
        returned = dict(zip(self.returning, row or (), strict=False))
        for callback in self._after:
            callback(returned)
        return returned


def current() -> Statement | None:
    """The statement this thread is gathering into, if any."""
    return getattr(_local, "statement", None)


@contextmanager
def gather() -> Iterator[Statement]:
    """Within the block, queue and outbox writes of this thread join the returned statement."""
    statement = Statement()
    _local.statement = statement
    try:
        yield statement
    finally:
        _local.statement = None
