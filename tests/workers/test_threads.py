"""Thread workers and the scheduler loop, with real fits and real threads."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_info

from hpsearch import InvalidParameterError, ThreadWorkers, run_search
from hpsearch.evaluation import EvaluationContext
from hpsearch.scheduler import run_scheduler
from hpsearch.strategies import GridStrategy, RandomStrategy
from hpsearch.workers import Task, TaskFinished, WorkerJoined


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Records, during fit, its thread and the BLAS thread limits in force."""

    seen: list = []

    def __init__(self, c=1.0):
        self.c = c

    def fit(self, X, y):
        blas = [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"]
        type(self).seen.append((threading.current_thread().name, blas))
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def make_context(estimator, n_splits=3):
    X, y = load_iris(return_X_y=True)
    splits = list(KFold(n_splits).split(X))
    return EvaluationContext(estimator, X, y, splits, {"score": get_scorer("accuracy")})


def test_thread_pool_runs_tasks_and_reports_events():
    events: queue.SimpleQueue = queue.SimpleQueue()
    pool = ThreadWorkers(2, inner_threads=1)
    pool.start(make_context(RecordingClassifier()), events.put)
    try:
        joined = events.get(timeout=10)
        assert isinstance(joined, WorkerJoined) and joined.worker.slots == 2
        for fold in range(3):
            joined.worker.submit(Task(fold, 0, fold, {"c": 2.0}))
        finished = [events.get(timeout=30) for _ in range(3)]
    finally:
        pool.stop()
    assert all(isinstance(e, TaskFinished) for e in finished)
    assert sorted(e.task_id for e in finished) == [0, 1, 2]
    assert all(e.result.error is None and e.result.n_test_samples == 50 for e in finished)
    assert not [t for t in threading.enumerate() if t.name.startswith("hpsearch-threads")]


def test_each_fit_runs_with_limited_blas_threads_and_limits_are_restored():
    before = [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"]
    RecordingClassifier.seen = []
    X, y = load_iris(return_X_y=True)
    run_search(RecordingClassifier(), {"c": [1.0, 2.0]}, X, y, cv=2,
               workers=ThreadWorkers(2, inner_threads=1), refit=False, progress=False)
    assert len(RecordingClassifier.seen) == 4
    assert all(name.startswith("hpsearch-threads") for name, _ in RecordingClassifier.seen)
    assert all(all(n == 1 for n in blas) for _, blas in RecordingClassifier.seen)
    assert [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"] == before


def test_thread_pool_rejects_bad_sizes():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidParameterError, match="integer >= 1"):
            ThreadWorkers(bad)


class ThreadCheckingGrid(GridStrategy):
    """A grid strategy that records which threads ask and tell run on; not ``inline``
    (as a strategy whose ask or tell may take long, a Bayesian one, is not)."""

    inline = False

    def __init__(self, space):
        super().__init__(space)
        self.threads: set[str] = set()

    def ask(self, n):
        self.threads.add(threading.current_thread().name)
        return super().ask(n)

    def tell(self, candidate_id, score):
        self.threads.add(threading.current_thread().name)
        super().tell(candidate_id, score)


def test_strategy_runs_off_the_loop_thread_and_hears_every_score():
    strategy = ThreadCheckingGrid({"c": [1.0, 2.0, 3.0]})
    results = run_scheduler(strategy, [ThreadWorkers(2)], make_context(RecordingClassifier()), score_key="score")
    assert [c.id for c, _ in results] == [0, 1, 2]
    assert strategy.threads == {"hpsearch-strategy"}
    assert sorted(strategy.scores) == [0, 1, 2]


class InlineGrid(ThreadCheckingGrid):
    inline = True  # ask and tell are cheap: run them on the thread handling events


def test_grid_and_random_strategies_are_inline():
    assert GridStrategy({"c": [1.0]}).inline is True
    assert RandomStrategy({"c": [1.0, 2.0]}, n_iter=1, random_state=0).inline is True


def test_an_inline_strategy_is_asked_and_told_on_the_threads_handling_events():
    strategy = InlineGrid({"c": [1.0, 2.0, 3.0, 4.0, 5.0]})
    results = run_scheduler(strategy, [ThreadWorkers(2)], make_context(RecordingClassifier()), score_key="score")
    assert [c.id for c, _ in results] == [0, 1, 2, 3, 4]
    assert sorted(strategy.scores) == [0, 1, 2, 3, 4]
    # the caller's thread (the first ask) and the slot threads reporting results
    assert strategy.threads and "hpsearch-strategy" not in strategy.threads


class BrokenStrategy(GridStrategy):
    def tell(self, candidate_id, score):
        raise RuntimeError("the strategy broke")


def test_a_strategy_error_ends_the_search_instead_of_hanging():
    with pytest.raises(RuntimeError, match="the strategy broke"):
        run_scheduler(BrokenStrategy({"c": [1.0, 2.0]}), [ThreadWorkers(1)],
                      make_context(RecordingClassifier()), score_key="score")
    assert not [t for t in threading.enumerate() if t.name.startswith("hpsearch-")]


class BrokenInlineStrategy(BrokenStrategy):
    inline = True


def test_an_inline_strategy_error_ends_the_search():
    with pytest.raises(RuntimeError, match="the strategy broke"):
        run_scheduler(BrokenInlineStrategy({"c": [1.0, 2.0]}), [ThreadWorkers(1)],
                      make_context(RecordingClassifier()), score_key="score")
    assert not [t for t in threading.enumerate() if t.name.startswith("hpsearch-")]


def test_pools_can_be_combined():
    X, y = load_iris(return_X_y=True)
    RecordingClassifier.seen = []
    result = run_search(RecordingClassifier(), {"c": [1.0, 2.0, 3.0, 4.0]}, X, y, cv=3,
                        workers=[1, ThreadWorkers(1)], refit=False, progress=False)
    assert len(result.cv_results_["params"]) == 4 and len(RecordingClassifier.seen) == 12
