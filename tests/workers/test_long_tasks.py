"""A worker runs every task on a slot thread, never on the thread that owns its
socket: a task that runs long keeps the worker alive, and SIGTERM, SHUTDOWN or its
master's death stop the worker at once, even in the middle of native code."""

from __future__ import annotations

import pathlib
import signal
import threading

import numpy as np
import pytest
from sklearn.metrics import check_scoring

from hpsearch import LocalProcesses, RemoteWorkers, run_search
from hpsearch.evaluation import EvaluationContext
from hpsearch.serialization import dumps
from hpsearch.workers.protocol import make_token

from .helpers import (
    FakeMaster,
    Recording,
    ThreadLogEstimator,
    assert_same_scores,
    read_line,
    read_thread_log,
    ship_context,
    start_script,
    wait_for,
)

X = np.random.default_rng(3).normal(size=(40, 2))
SPACE = {"c": [float(c) for c in range(20)]}
ROOT = pathlib.Path(__file__).resolve().parents[2]


def slow_fit_started(log: str) -> bool:
    return any(kind == "slow" for *_, kind in read_thread_log(log))


def slow_fit_thread(log: str) -> list[str]:
    return [thread for _, thread, kind in read_thread_log(log) if kind == "slow"]


def test_tasks_run_on_the_slot_thread_with_the_scores_of_threads(tmp_path):
    log = str(tmp_path / "threads.log")
    est = ThreadLogEstimator(log=log)
    with LocalProcesses(1) as pool:
        remote = run_search(est, SPACE, X, cv=5, workers=pool, refit=False, progress=False)
    threads = run_search(est, SPACE, X, cv=5, workers=1, refit=False, progress=False)
    assert_same_scores(remote, threads)
    where = [thread for _, thread, _ in read_thread_log(log)][:100]  # the worker's fits
    assert where == ["hpsearch-slot-0"] * 100


@pytest.mark.slow
def test_a_long_task_keeps_its_worker_alive(tmp_path):
    log = str(tmp_path / "threads.log")
    # Fast tasks, then one of 3 s: twice the master's heartbeat timeout.
    est = ThreadLogEstimator(slow_c=15.0, delay=3.0, log=log)
    with LocalProcesses(1, heartbeat=0.2, heartbeat_timeout=1.5) as pool:
        result = run_search(est, SPACE, X, cv=2, workers=pool, refit=False, progress=False)
        assert pool.stats["lost"] == 0
    assert slow_fit_thread(log) == ["hpsearch-slot-0"]
    assert list(result.cv_results_["param_c"]) == SPACE["c"]


@pytest.mark.slow
def test_sigterm_during_native_code_stops_the_worker_at_once(tmp_path, spawn_worker):
    log = str(tmp_path / "threads.log")
    # 120 s in one C call: Python's signal handler cannot run until it returns.
    est = ThreadLogEstimator(slow_c=15.0, delay=120.0, log=log, native=True)
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=1, join_timeout=60,
                       heartbeat=0.5, heartbeat_timeout=10.0) as pool:
        first = spawn_worker(pool.endpoint, pool.token, "--name", "first", "--log-level", "INFO")
        recording = Recording(pool)
        outcome: list = []

        def search():
            outcome.append(run_search(est, SPACE, X, cv=2, workers=recording, refit=False, progress=False))

        thread = threading.Thread(target=search, daemon=True)
        thread.start()
        wait_for(lambda: slow_fit_started(log), 60, "the slow fit to start")
        assert slow_fit_thread(log) == ["hpsearch-slot-0"]
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0  # did not wait out its 120 s task
        second = spawn_worker(pool.endpoint, pool.token, "--name", "second")
        thread.join(60)
        assert not thread.is_alive() and second.poll() is None
    lost = [e for e in recording.events if type(e).__name__ == "WorkerLost"]
    assert [(e.worker, e.reason) for e in lost] == [("first", "left: SIGTERM")]
    assert list(outcome[0].cv_results_["param_c"]) == SPACE["c"]
    assert not np.isnan(outcome[0].cv_results_["mean_test_score"]).any()


def start_search(master: FakeMaster, search: int, estimator) -> str:
    """Ship a context for ``estimator`` to ``master``'s worker; its content id."""
    splits = [(np.arange(20), np.arange(20, 40))]
    return ship_context(master, search, EvaluationContext(estimator, X, None, splits,
                                                          {"score": check_scoring(estimator)}))


def test_shutdown_during_a_long_task_stops_the_worker_at_once(tmp_path, spawn_worker):
    log = str(tmp_path / "threads.log")
    token = make_token()
    master = FakeMaster(token)
    proc = spawn_worker(master.endpoint, token, "--heartbeat", "0.2")
    try:
        master.welcome()
        cid = start_search(master, 3, ThreadLogEstimator(slow_c=9.0, delay=120.0, log=log))
        for task_id, c in enumerate([1.0, 2.0, 9.0]):  # the last one is slow
            master.send("TASK", {"search": 3, "task_id": task_id, "attempt": 0, "context_id": cid, "fold": 0},
                        dumps({"c": c}))
            if c != 9.0:
                assert master.next("RESULT")["task_id"] == task_id
        wait_for(lambda: slow_fit_started(log), 30, "the slow fit to start")
        master.next("HEARTBEAT", timeout=5)  # the socket's thread is free
        master.send("SHUTDOWN", {"exit": True, "reason": "test: the search is over"})
        assert proc.wait(10) == 0  # not after its 120 s task
    finally:
        master.close()
    assert slow_fit_thread(log) == ["hpsearch-slot-0"]


_MASTER = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from hpsearch import LocalProcesses, run_search
from tests.workers.helpers import ThreadLogEstimator
with LocalProcesses(1) as pool:
    print(pool.processes[0].pid, flush=True)
    run_search(ThreadLogEstimator(slow_c=15.0, delay=120.0, log={log!r}), {{"c": [float(c) for c in range(20)]}},
               np.zeros((40, 2)), cv=2, workers=pool, refit=False, progress=False)
"""


@pytest.mark.slow
def test_a_worker_whose_master_dies_during_a_long_task_exits_at_once(tmp_path):
    import psutil

    log = str(tmp_path / "threads.log")
    master = start_script(_MASTER.format(root=str(ROOT), log=log))
    worker = None
    try:
        worker = psutil.Process(int(read_line(master)))
        wait_for(lambda: slow_fit_started(log), 120, "the slow fit to start")
        master.kill()
        master.wait(30)
        gone, alive = psutil.wait_procs([worker], timeout=15)
        assert not alive, "the worker ran its 120 s task to the end"
    finally:
        if master.poll() is None:
            master.kill()
        master.wait(30)
        if worker is not None and worker.is_running():
            worker.kill()
    assert slow_fit_thread(log) == ["hpsearch-slot-0"]
