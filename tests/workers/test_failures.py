"""Workers that die, join and leave while a search runs (real subprocesses)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from hpsearch import RemoteWorkers, run_search

from .helpers import Recording, SleepEstimator, assert_same_scores, read_line, start_script, wait_for

pytestmark = pytest.mark.slow

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 3))
SPACE = {"c": [float(c) for c in range(12)], "delay": [0.15]}


# Long enough for a worker process to start and join while it runs, even on a busy machine.
LONG_SPACE = {"c": [float(c) for c in range(30)], "delay": [0.15]}


def reference(space=SPACE):
    return run_search(SleepEstimator(), {"c": space["c"], "delay": [0.0]}, X, cv=3, workers=1, progress=False)


def check_exactly_once(result, recording, space=SPACE):
    ref = reference(space)
    for key in ("split0_test_score", "split1_test_score", "split2_test_score", "mean_test_score"):
        np.testing.assert_array_equal(result.cv_results_[key], ref.cv_results_[key])
    assert {e.task_id for e in recording.finished()} == set(range(len(space["c"]) * 3))


def test_sigkill_mid_search_loses_nothing_and_records_nothing_twice(spawn_worker):
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=2, join_timeout=60,
                       heartbeat=0.5, heartbeat_timeout=2.0) as pool:
        procs = [spawn_worker(pool.endpoint, pool.token, "--name", f"w{i}", "--heartbeat", "0.5")
                 for i in range(2)]
        recording = Recording(pool)

        def both_joined_and_working() -> bool:
            # Both joined first: on a busy machine w1 may finish 4 tasks before w0 is up.
            joined = {e.worker.name for e in recording.events if type(e).__name__ == "WorkerJoined"}
            return joined == {"w0", "w1"} and len(recording.finished()) >= 4

        def killer():
            wait_for(both_joined_and_working, 60, "both workers to join and run a few tasks")
            os.kill(procs[0].pid, signal.SIGKILL)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = run_search(SleepEstimator(), SPACE, X, cv=3, workers=recording, progress=False)
        thread.join(10)
        assert procs[0].wait(10) == -signal.SIGKILL
        assert pool.stats["lost"] >= 1
    check_exactly_once(result, recording)
    lost = [e for e in recording.events if type(e).__name__ == "WorkerLost"]
    assert [e.worker for e in lost] == ["w0"]
    assert any(e.attempt >= 1 for e in recording.finished())  # its tasks ran again elsewhere


def test_join_mid_search_gets_tasks_and_bye_loses_none(spawn_worker):
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=1, join_timeout=60,
                       heartbeat=0.5, heartbeat_timeout=5.0) as pool:
        first = spawn_worker(pool.endpoint, pool.token, "--name", "first")
        recording = Recording(pool)
        late: list = []

        def churn():
            wait_for(lambda: len(recording.finished()) >= 2, 60, "the search to run")
            late.append(spawn_worker(pool.endpoint, pool.token, "--name", "late"))
            wait_for(lambda: pool.stats["tasks_to:late"] >= 1, 60, "the late worker to get a task")
            first.send_signal(signal.SIGTERM)  # leaves with BYE

        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        result = run_search(SleepEstimator(), LONG_SPACE, X, cv=3, workers=recording, progress=False)
        thread.join(10)
        assert first.wait(10) == 0  # a clean exit on SIGTERM
        assert pool.stats["tasks_to:late"] >= 1
    check_exactly_once(result, recording, LONG_SPACE)
    lost = [e for e in recording.events if type(e).__name__ == "WorkerLost"]
    assert [(e.worker, e.reason.startswith("left")) for e in lost] == [("first", True)]
    assert {e.worker for e in recording.finished()} == {"first", "late"}


def test_worker_serves_a_new_master_after_the_first_closes(spawn_worker):
    from hpsearch.workers.protocol import make_token

    token = make_token()
    with RemoteWorkers("tcp://127.0.0.1:*", token=token, join_timeout=60) as pool:
        endpoint = pool.endpoint
        proc = spawn_worker(endpoint, token, "--name", "survivor")
        first = run_search(SleepEstimator(), {"c": [1.0, 2.0]}, X, cv=2, workers=pool, progress=False)
    # The first master said SHUTDOWN{exit: false}: the worker backs off and comes back.
    with RemoteWorkers(endpoint, token=token, join_timeout=60) as pool:
        second = run_search(SleepEstimator(), {"c": [1.0, 2.0]}, X, cv=2, workers=pool, progress=False)
        assert pool.stats["hellos"] == 1 and pool.stats["contexts_sent"] == 0  # it kept the data
    assert proc.poll() is None
    assert_same_scores(first, second)


_MASTER = """
import sys, time
from hpsearch import {pool}
with {pool}({args}) as pool:
    print({report}, flush=True)
    deadline = time.monotonic() + 120
    while pool.n_workers < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    print("joined", pool.n_workers, flush=True)
    time.sleep(600)
"""


def start_master(pool: str, args: str, report: str):
    """A master in its own process, to be killed outright: (process, first line it printed)."""
    proc = start_script(_MASTER.format(pool=pool, args=args, report=report))
    return proc, read_line(proc)


def test_local_workers_exit_when_their_master_is_killed():
    import psutil

    master, pids = start_master("LocalProcesses", "2, start_timeout=120", "[p.pid for p in pool.processes]")
    assert read_line(master).startswith("joined")
    workers = [psutil.Process(int(pid)) for pid in pids.strip("[]").split(",")]
    try:
        assert all(w.is_running() for w in workers)
        master.send_signal(signal.SIGKILL)  # no SHUTDOWN, no close(): the workers notice alone
        master.wait(30)
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"workers {[w.pid for w in alive]} outlived their master"
    finally:
        for worker in workers:
            if worker.is_running():
                worker.kill()


def test_worker_of_a_killed_master_joins_its_successor_at_once(spawn_worker):
    from hpsearch.workers.protocol import make_token

    token = make_token()
    master, endpoint = start_master(
        "RemoteWorkers", f"'tcp://127.0.0.1:*', token={token!r}, heartbeat_timeout=60", "pool.endpoint")
    proc = spawn_worker(endpoint, token, "--name", "pinned")
    try:
        assert read_line(master) == "joined 1"  # its session is pinned to that master
        master.send_signal(signal.SIGKILL)
        master.wait(30)
        with RemoteWorkers(endpoint, token=token, join_timeout=60) as pool:
            start = time.monotonic()
            result = run_search(SleepEstimator(), {"c": [1.0, 2.0]}, X, cv=2, workers=pool, progress=False)
            waited = time.monotonic() - start
        # The new master's SHUTDOWN{exit: false} to the unknown session is accepted at
        # once; before, the worker waited out the dead master's 60 s silence timeout.
        assert waited < 20, f"the worker took {waited:.1f} s to join the new master"
        assert result.cv_results_["mean_test_score"].shape == (2,)
        assert proc.poll() is None
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(30)


@pytest.mark.slow
def test_every_worker_lost_ends_the_search_keeping_the_completed_candidates(spawn_worker):
    from hpsearch.errors import NoWorkersError

    from .helpers import CrashEstimator

    space = {"c": [float(c) for c in range(30)]}
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=1, join_timeout=4,
                       heartbeat=0.5, heartbeat_timeout=2.0) as pool:
        spawn_worker(pool.endpoint, pool.token, "--heartbeat", "0.5")
        wait_for(lambda: pool.n_workers == 1, 60, "the worker to join")
        with pytest.raises(NoWorkersError, match="every remote worker was lost") as info:
            # Fits of 2 ms: the 36 before the crash outlast the worker's result latency
            # many times over (no-op fits all run within about one of its sends).
            run_search(CrashEstimator(crash_c=12.0, delay=0.002), space, X, cv=3, workers=pool, progress=False)
    partial = info.value.partial_result
    done = [p["c"] for p in partial.cv_results_["params"]]
    # Candidates 0-11 run before the crash. Their last results may die with the worker:
    # a worker sends the results finished since its loop's last pass together (within
    # RESULT_POLL, longer on a loaded machine), so what counts is that what reached
    # the master is kept, complete, and scores as a rerun does.
    assert 4 <= len(done) and 12.0 not in done and set(done) <= set(space["c"])
    again = run_search(CrashEstimator(), {"c": done}, X, cv=3, workers=1, refit=False, progress=False)
    np.testing.assert_array_equal(partial.cv_results_["mean_test_score"], again.cv_results_["mean_test_score"])
