"""How soon a worker tries its broker again after losing it.

Celery's consumer leaves the schedule to kombu, whose attempts come 2, 4, 6 … up to 30 s apart.
The broker here is the router, which stands on PostgreSQL, so after a database outage work
resumed up to 30 s after the database was back. HelixAgent's attempts come 1, 2, 3, 4 and then
every 5 s: work resumes within 5 s of the database, and Celery logs one line per attempt.
"""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP as CeleryAMQP
from kombu import Connection as KombuConnection

#: seconds before the first retry, added per retry, and the longest wait between two
RETRY_START, RETRY_STEP, RETRY_MAX = 1.0, 1.0, 5.0


class Connection(KombuConnection):
    def ensure_connection(self, *args: Any, **kwargs: Any) -> Connection:
        """Kombu's, with HelixAgent's schedule unless the caller names one."""
        kwargs.setdefault("interval_start", RETRY_START)
        kwargs.setdefault("interval_step", RETRY_STEP)
        kwargs.setdefault("interval_max", RETRY_MAX)
        super().ensure_connection(*args, **kwargs)
        return self


class AMQP(CeleryAMQP):
    """The app's broker API, with :class:`Connection` for every broker connection it opens."""

    Connection = Connection
    BrokerConnection = Connection
