"""The warm pool of local worker processes, reused by every search of the process."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

from hpsearch import run_search
from hpsearch.errors import InvalidParameterError
from hpsearch.workers import local
from hpsearch.workers.local import close_warm_processes, warm_processes

from .helpers import assert_same_scores

pytestmark = pytest.mark.slow

X, Y = load_iris(return_X_y=True)
SPACE = {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1]}


@pytest.fixture(autouse=True)
def no_warm_pool_left():
    yield
    close_warm_processes()
    assert local._WARM == {}


def warm_pids() -> list[int]:
    return sorted(p.pid for pool in local._WARM.values() for p in pool.processes)


def test_second_search_reuses_the_processes_and_scores_equal_gridsearchcv():
    first = run_search(SVC(), SPACE, X, Y, cv=3, workers=warm_processes(2), progress=False)
    pids = warm_pids()
    assert len(pids) == 2 and all(os.getpid() != pid for pid in pids)
    second = run_search(SVC(), SPACE, X, Y, cv=3, workers=warm_processes(2), progress=False)
    assert warm_pids() == pids  # no start-up the second time
    assert_same_scores(first, second)
    sk = GridSearchCV(SVC(), SPACE, cv=3).fit(X, Y)
    assert list(first.cv_results_["mean_test_score"]) == list(sk.cv_results_["mean_test_score"])


def test_a_dead_warm_process_is_replaced_at_the_next_search():
    run_search(SVC(), {"C": [1.0]}, X, Y, cv=2, workers=warm_processes(1), progress=False)
    (pid,) = warm_pids()
    os.kill(pid, signal.SIGKILL)
    (pool,) = local._WARM.values()
    deadline = time.monotonic() + 30
    while not pool._dead_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    result = run_search(SVC(), SPACE, X, Y, cv=3, workers=warm_processes(1), progress=False)
    assert len(result.cv_results_["params"]) == 6
    assert warm_pids() != [pid]


def test_a_search_while_the_warm_pool_is_busy_gets_processes_of_its_own():
    busy = warm_processes(1)
    events: list = []
    busy.start(_context(), events.append)
    try:
        result = run_search(SVC(), {"C": [1.0]}, X, Y, cv=2, workers=warm_processes(1), progress=False)
        assert result.best_params_ == {"C": 1.0}
        assert len(local._WARM) == 1 and busy.pool is local._WARM[(1, 1)]
    finally:
        busy.stop()
    assert local._WARM_BUSY == set()


def _context():
    from sklearn.metrics import check_scoring

    from hpsearch.evaluation import EvaluationContext

    return EvaluationContext(estimator=SVC(), X=X, y=Y, splits=[(list(range(100)), list(range(100, 150)))],
                             scorers={"score": check_scoring(SVC())}, fit_params={}, score_params={},
                             error_score=float("nan"), return_train_score=False)


@pytest.mark.parametrize("n", [0, 1.5, True])
def test_bad_sizes(n):
    with pytest.raises(InvalidParameterError, match="integer >= 1"):
        warm_processes(n)
