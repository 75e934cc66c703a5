"""LocalProcesses replaces worker processes that die, at start-up too (real processes)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from hpsearch import LocalProcesses
from hpsearch.errors import NoWorkersError

pytestmark = pytest.mark.slow


def test_a_worker_killed_while_starting_is_replaced():
    pool = LocalProcesses(2, heartbeat_timeout=10)
    killed: list[int] = []

    def kill_the_first() -> None:
        deadline = time.monotonic() + 60
        while not pool.processes and time.monotonic() < deadline:
            time.sleep(0.005)
        if pool.processes:
            pid = pool.processes[0].pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=kill_the_first, daemon=True)
    thread.start()
    with pool:
        thread.join(60)
        assert killed and pool.n_workers == 2
        assert pool.stats["restarts"] >= 1 and killed[0] not in [p.pid for p in pool.processes]


def test_a_worker_that_cannot_start_fails_the_pool_with_its_output():
    start = time.monotonic()
    with pytest.raises(NoWorkersError, match=r"(?s)exited with code 2 before joining.*--no-such-flag"):
        LocalProcesses(1, extra_args=["--no-such-flag"]).open()
    assert time.monotonic() - start < 60
