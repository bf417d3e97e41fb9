"""A worker started on a backlog, in every migration mode: it takes the next message as soon as a
task ends and frees a slot of its prefetch window, not at its next idle poll."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ModeSetting
from tests.helpers import completed_once, submit_many, wait_completed

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_backlog_drains_without_waiting_for_idle_polls(start_worker: Any, migration_mode: ModeSetting) -> None:
    # The threads pool acknowledges in the thread that ran the task. Waiting for the poll
    # instead, the worker would run one window (2 threads x 4 prefetched) per Celery loop
    # timeout of 2 s: 200 tasks in about 50 s. Draining them takes a second or two.
    ids = submit_many(200)
    start_worker("w1", concurrency=2, HELIX_POLL_INTERVAL="30", **migration_mode.env)
    wait_completed(ids, timeout=20)
    completed_once(ids)
