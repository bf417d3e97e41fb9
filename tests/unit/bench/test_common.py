"""The benchmarks' CPU accounting keeps the CPU of processes that end between two readings."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.common import cpu_seconds

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_a_child_that_ends_counts_under_its_parent_before_and_after_it_is_reaped() -> None:
    before = cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", BURN])
    deadline = time.monotonic() + 30
    while state(child.pid) != "Z":  # ended, not yet reaped
        assert time.monotonic() < deadline, "the child did not end"
        time.sleep(0.01)
    as_zombie = cpu_seconds()
    child.wait()
    reaped = cpu_seconds()
    assert as_zombie["producer"] - before["producer"] >= 0.25
    assert reaped["producer"] - before["producer"] >= 0.25
    assert abs(reaped["producer"] - as_zombie["producer"]) < 0.1  # counted once, not twice
