"""The benchmarks' CPU accounting keeps the CPU of processes that end between two readings, once,
and never takes off more than a parent counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import cpu_reading, cpu_used

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
#: burns, says so, then waits to be ended
BURN_THEN_WAIT = BURN + "\nprint('burnt', flush=True)\ntime.sleep(60)"
#: a parent that ignores SIGCHLD: the kernel reaps its child without adding the child's CPU to it
UNCOUNTING_PARENT = """
import signal, subprocess, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
sys.stdin.read()
"""


def state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_a_child_that_ends_counts_under_its_parent_before_and_after_it_is_reaped() -> None:
    before = cpu_reading()
    child = subprocess.Popen([sys.executable, "-c", BURN])
    deadline = time.monotonic() + 30
    while state(child.pid) != "Z":  # ended, not yet reaped
        assert time.monotonic() < deadline, "the child did not end"
        time.sleep(0.01)
    as_zombie = cpu_reading()
    child.wait()
    reaped = cpu_reading()
    assert cpu_used(before, as_zombie)["producer"] >= 0.25
    assert cpu_used(before, reaped)["producer"] >= 0.25
    assert abs(cpu_used(as_zombie, reaped)["producer"]) < 0.1  # counted once, not twice


def test_a_process_whose_parent_does_not_count_it_takes_nothing_away_when_it_ends() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", UNCOUNTING_PARENT, BURN_THEN_WAIT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "burnt"
        first = cpu_reading()
        assert first[child][0] == "other" and first[child][2] >= 0.25 * os.sysconf("SC_CLK_TCK")
        os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child}").exists():  # reaped by the kernel, not counted by its parent
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        assert cpu_used(first, cpu_reading())["other"] > -0.15  # not its 0.3 s taken off
    finally:
        parent.stdin.close()  # type: ignore[union-attr]
        parent.wait(10)
