"""A one-slot worker runs short tasks on its main thread (no hand-off to a slot
thread and back); a task that runs long there still keeps the worker alive, and a
stop request still stops the worker at once."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

from hpsearch import LocalProcesses, RemoteWorkers, run_search

from .helpers import Recording, ThreadLogEstimator, assert_same_scores, read_thread_log, wait_for

X = np.random.default_rng(3).normal(size=(40, 2))
SPACE = {"c": [float(c) for c in range(20)]}


def test_short_tasks_run_inline_with_the_scores_of_threads(tmp_path):
    log = str(tmp_path / "threads.log")
    est = ThreadLogEstimator(log=log)
    with LocalProcesses(1) as pool:
        remote = run_search(est, SPACE, X, cv=5, workers=pool, refit=False, progress=False)
    threads = run_search(est, SPACE, X, cv=5, workers=1, refit=False, progress=False)
    assert_same_scores(remote, threads)
    where = [thread for _, thread, _ in read_thread_log(log)][:100]  # the worker's fits
    assert len(where) == 100
    # The first tasks (duration unknown) go to the slot thread, the rest run inline.
    assert where[0] == "hpsearch-slot-0"
    assert where.count("MainThread") >= 90, where


def test_slow_tasks_stay_on_the_slot_thread(tmp_path):
    log = str(tmp_path / "threads.log")
    est = ThreadLogEstimator(slow_c=0.0, delay=0.05, log=log)  # c=0's first fit is slow: > 10 ms
    with LocalProcesses(1) as pool:
        run_search(est, {"c": [0.0]}, X, cv=2, workers=pool, refit=False, progress=False)
    assert [thread for _, thread, _ in read_thread_log(log)] == ["hpsearch-slot-0"] * 2


@pytest.mark.slow
def test_a_long_inline_task_keeps_its_worker_alive(tmp_path):
    log = str(tmp_path / "threads.log")
    # Fast tasks, then one of 3 s inline: twice the master's heartbeat timeout.
    est = ThreadLogEstimator(slow_c=15.0, delay=3.0, log=log)
    with LocalProcesses(1, heartbeat=0.2, heartbeat_timeout=1.5) as pool:
        result = run_search(est, SPACE, X, cv=2, workers=pool, refit=False, progress=False)
        assert pool.stats["lost"] == 0
    assert [thread for c, thread, kind in read_thread_log(log) if kind == "slow"] == ["MainThread"]
    assert list(result.cv_results_["param_c"]) == SPACE["c"]


@pytest.mark.slow
def test_sigterm_interrupts_a_long_inline_task(tmp_path, spawn_worker):
    log = str(tmp_path / "threads.log")
    est = ThreadLogEstimator(slow_c=15.0, delay=120.0, log=log)
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=1, join_timeout=60,
                       heartbeat=0.5, heartbeat_timeout=10.0) as pool:
        first = spawn_worker(pool.endpoint, pool.token, "--name", "first", "--log-level", "INFO")
        recording = Recording(pool)
        outcome: list = []

        def search():
            outcome.append(run_search(est, SPACE, X, cv=2, workers=recording, refit=False, progress=False))

        thread = threading.Thread(target=search, daemon=True)
        thread.start()
        wait_for(lambda: any(kind == "slow" for *_, kind in read_thread_log(log)), 60, "the slow fit to start")
        assert [thread for *_, thread, kind in read_thread_log(log) if kind == "slow"] == ["MainThread"]
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0  # did not wait out its 120 s task
        second = spawn_worker(pool.endpoint, pool.token, "--name", "second")
        thread.join(60)
        assert not thread.is_alive() and second.poll() is None
    stderr = first.communicate(timeout=10)[1].decode()
    assert "interrupted" in stderr
    lost = [e for e in recording.events if type(e).__name__ == "WorkerLost"]
    assert [(e.worker, e.reason) for e in lost] == [("first", "left: SIGTERM")]
    assert list(outcome[0].cv_results_["param_c"]) == SPACE["c"]
    assert not np.isnan(outcome[0].cv_results_["mean_test_score"]).any()
