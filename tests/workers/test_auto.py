"""AutoWorkers: threads, moved to warm local processes when the fits hold the GIL."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV

from hpsearch import run_search
from hpsearch.workers import local
from hpsearch.workers.auto import AutoWorkers, ParallelProbe

X, Y = load_iris(return_X_y=True)


class SlowPythonCentroid(ClassifierMixin, BaseEstimator):
    """Nearest class mean, computed in plain Python loops (holds the GIL)."""

    def __init__(self, rounds: int = 200) -> None:
        self.rounds = rounds

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        total = 0.0
        for _ in range(self.rounds * 100):  # pure-Python work
            total += 1.0
        self.means_ = np.array([X[y == c].mean(axis=0) for c in self.classes_]) + 0 * total
        return self

    def predict(self, X):
        return self.classes_[np.argmin(((X[:, None, :] - self.means_[None]) ** 2).sum(axis=2), axis=1)]


def test_probe_moves_when_one_core_of_two_is_busy():
    probe = ParallelProbe(2, start=0.0, min_task_seconds=0.01)
    assert [probe.record(0.1, t) for t in (0.1, 0.2, 0.3, 0.4)] == [False, False, False, True]
    assert probe.record(0.1, 0.5) is False  # decided once


def test_probe_stays_when_the_threads_ran_in_parallel():
    probe = ParallelProbe(2, start=0.0)
    assert not any(probe.record(0.1, t) for t in (0.1, 0.1, 0.2, 0.2))
    assert probe.decided and not probe.move


def test_probe_stays_on_threads_for_tiny_tasks_and_for_one_thread():
    probe = ParallelProbe(2, start=0.0, min_task_seconds=0.01)
    assert not any(probe.record(0.0005, t) for t in (0.001, 0.002, 0.003, 0.004))
    one = ParallelProbe(1, start=0.0)
    assert one.decided and not one.record(0.1, 10.0)


@pytest.mark.slow
def test_gil_bound_search_moves_to_processes_and_loses_nothing():
    space = {"rounds": list(range(2000, 2040))}
    pool = AutoWorkers(2, min_task_seconds=0.0)
    try:
        # Warm the process pool first, so that the move happens at once.
        run_search(SlowPythonCentroid(), {"rounds": [1]}, X, Y, cv=2, workers=local.warm_processes(2),
                   progress=False)
        ours = run_search(SlowPythonCentroid(), space, X, Y, cv=3, workers=pool, progress=False)
    finally:
        local.close_warm_processes()
    assert pool.moved  # threads taking turns keep at most one core of the two busy
    theirs = GridSearchCV(SlowPythonCentroid(), space, cv=3).fit(X, Y)
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        assert list(ours.cv_results_[key]) == list(theirs.cv_results_[key])
    assert all(not np.isnan(s) for s in ours.cv_results_["mean_test_score"])
