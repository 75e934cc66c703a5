"""Batched tiny tasks end to end: real worker processes and threads (protocol 1.4)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from hpsearch import GridSearchCV, LocalProcesses, ThreadWorkers, run_search
from hpsearch.workers.base import Results

from .helpers import Recording, assert_same_scores, wait_for

pytestmark = pytest.mark.slow

X = np.arange(200, dtype=float).reshape(100, 2)
Y = np.arange(100) % 2
SPACE = {"c": list(range(300))}


class Tiny(BaseEstimator):
    """A fit that costs nothing, with a score that names the candidate and the fold."""

    def __init__(self, c: int = 0) -> None:
        self.c = c

    def fit(self, X, y=None):
        self.first_ = float(X[0, 0])
        return self

    def score(self, X, y=None):
        return self.c + self.first_ / 1000


def reference():
    return run_search(Tiny(), SPACE, X, Y, cv=5, workers=1, refit=False, progress=False)


def test_tiny_tasks_travel_in_batches_and_give_the_same_scores():
    with LocalProcesses(2, heartbeat_timeout=10, start_timeout=120) as pool:
        recording = Recording(pool)
        result = run_search(Tiny(), SPACE, X, Y, cv=5, workers=recording, refit=False, progress=False)
        assert pool.stats["task_batches"] >= 1
        assert pool.stats["tasks_sent"] == 1500
    assert any(isinstance(e, Results) for e in recording.events)
    assert len({e.task_id for e in recording.finished()}) == 1500
    assert_same_scores(result, reference())


def test_a_worker_killed_with_batches_in_flight_loses_nothing():
    with LocalProcesses(2, heartbeat_timeout=10, start_timeout=120) as pool:
        recording = Recording(pool)
        killed: list[int] = []

        def kill_one() -> None:
            wait_for(lambda: pool.stats["task_batches"] >= 4, 60, "batches to flow")
            pid = pool.processes[0].pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        thread = threading.Thread(target=kill_one, daemon=True)
        thread.start()
        space = {"c": list(range(3000))}  # long enough to be killed mid-search
        result = run_search(Tiny(), space, X, Y, cv=5, workers=recording, refit=False, progress=False)
        thread.join(60)
        assert killed
    expected = run_search(Tiny(), space, X, Y, cv=5, workers=1, refit=False, progress=False)
    assert_same_scores(result, expected)
    assert not any(np.isnan(result.cv_results_["mean_test_score"]))


def test_threads_run_batches_and_give_scikit_learns_scores():
    search = GridSearchCV(Tiny(), SPACE, cv=5, refit=False, workers=ThreadWorkers(2)).fit(X, Y)
    from sklearn.model_selection import GridSearchCV as SklearnGridSearchCV

    expected = SklearnGridSearchCV(Tiny(), SPACE, cv=5, refit=False).fit(X, Y)
    for key in ("mean_test_score", "std_test_score", "rank_test_score", "split0_test_score"):
        np.testing.assert_array_equal(search.cv_results_[key], expected.cv_results_[key], err_msg=key)


class Appends(BaseEstimator):
    """A fit that changes its list param in place: a task must never see another's."""

    def __init__(self, c: int = 0, seen: list | None = None) -> None:
        self.c = c
        self.seen = seen

    def fit(self, X, y=None):
        self.seen.append(float(X[0, 0]))
        self.n_seen_ = len(self.seen)
        return self

    def score(self, X, y=None):
        return self.c + self.n_seen_ * 1000 + self.seen[-1] / 1000


def test_folds_of_a_candidate_share_no_mutable_param_on_a_worker():
    # The folds of a candidate travel with the same params bytes; a worker unpickles
    # them once only when every value is an immutable scalar.
    space = {"c": list(range(60)), "seen": [[], [0.5]]}
    with LocalProcesses(2, heartbeat_timeout=10, start_timeout=120) as pool:
        result = run_search(Appends(), space, X, Y, cv=5, workers=pool, refit=False, progress=False)
        assert pool.stats["task_batches"] >= 1
    expected = run_search(Appends(), space, X, Y, cv=5, workers=1, refit=False, progress=False)
    assert_same_scores(result, expected)
    assert set(np.unique(result.cv_results_["split0_test_score"] // 1000)) == {1.0, 2.0}
