"""Workers that die, join and leave while a search runs (real subprocesses)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from hpsearch import RemoteWorkers, run_search

from .helpers import Recording, SleepEstimator, assert_same_scores, wait_for

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

        def killer():
            wait_for(lambda: len(recording.finished()) >= 4, 60, "a few results")
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
