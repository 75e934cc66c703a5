"""LocalProcesses end to end: real hpsearch-worker subprocesses over tcp on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.svm import SVC

from hpsearch import LocalProcesses, run_search
from hpsearch.errors import InvalidParameterError

from .helpers import Recording, assert_same_scores

pytestmark = pytest.mark.slow

X, Y = load_iris(return_X_y=True)
SPACE = {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1, "scale"]}


@pytest.fixture(scope="module")
def pool():
    with LocalProcesses(2, heartbeat_timeout=10, start_timeout=120) as pool:
        yield pool


def test_scores_equal_threads(pool):
    remote = run_search(SVC(), SPACE, X, Y, cv=3, workers=pool, progress=False)
    threads = run_search(SVC(), SPACE, X, Y, cv=3, workers=2, progress=False)
    assert_same_scores(remote, threads)
    assert remote.best_params_ == threads.best_params_
    assert pool.stats["results"] >= 27
    assert len([k for k in pool.stats if k.startswith("tasks_to:local-")]) == 2  # both worked


def test_context_sent_once_per_worker_and_never_again(pool):
    X2 = np.ascontiguousarray(X[::-1])  # data no earlier search used
    before = pool.stats["contexts_sent"]
    first = run_search(SVC(), {"C": [1.0, 2.0]}, X2, Y[::-1], cv=3, workers=pool, progress=False)
    assert pool.stats["contexts_sent"] == before + 2  # once to each of the 2 workers
    tasks = pool.stats["tasks_sent"]
    second = run_search(SVC(), {"C": [1.0, 2.0]}, X2, Y[::-1], cv=3, workers=pool, progress=False)
    assert pool.stats["contexts_sent"] == before + 2  # the workers still hold it
    assert pool.stats["tasks_sent"] == tasks + 6
    assert_same_scores(first, second)


def test_threads_and_processes_in_one_search(pool):
    recording = Recording(pool)
    mixed = run_search(SVC(), SPACE, X, Y, cv=3, workers=[recording, 1], progress=False)
    threads = run_search(SVC(), SPACE, X, Y, cv=3, workers=1, progress=False)
    assert_same_scores(mixed, threads)
    assert 0 < len(recording.finished()) <= 27


def test_used_without_with_spawns_and_stops_its_processes():
    pool = LocalProcesses(1, heartbeat_timeout=10)
    result = run_search(SVC(), {"C": [1.0]}, X, Y, cv=2, workers=pool, progress=False)
    assert result.best_params_ == {"C": 1.0}
    assert pool.processes == [] and pool.n_workers == 0


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2"])
def test_bad_sizes(n):
    with pytest.raises(InvalidParameterError, match="n must be an integer"):
        LocalProcesses(n)


def test_large_params_travel_as_payload_frames(pool):
    from .helpers import WeightsEstimator

    space = {"weights": [np.arange(20_000.0), np.ones(20_000)]}  # 160 kB each: out of band
    remote = run_search(WeightsEstimator(), space, X, cv=3, workers=pool, progress=False)
    threads = run_search(WeightsEstimator(), space, X, cv=3, workers=1, progress=False)
    assert_same_scores_by_value(remote, threads)


def assert_same_scores_by_value(a, b):
    np.testing.assert_array_equal(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"])
    assert a.best_index_ == b.best_index_


def test_params_that_cannot_travel_fail_their_candidate_and_nothing_hangs(pool):
    import threading
    import warnings

    from .helpers import WeightsEstimator

    space = {"weights": [np.ones(3), threading.Lock()]}  # a lock pickles with nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn-style "fits failed" warning
        result = run_search(WeightsEstimator(), space, X, cv=2, workers=pool, progress=False)
    assert np.isnan(result.cv_results_["mean_test_score"][1])
    assert result.best_index_ == 0
    assert "the params could not be serialized" in " ".join(result.fit_failures_)
