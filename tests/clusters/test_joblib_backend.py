"""The "hpsearch" joblib backend: scikit-learn's n_jobs on a real LocalCluster and on threads."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate

import hpsearch  # noqa: F401 - registers the backend
from hpsearch import DaskWorkers, RemoteWorkers
from hpsearch.errors import InvalidParameterError
from hpsearch.workers.dask import buffer_id

distributed = pytest.importorskip("distributed")

X, Y = make_classification(n_samples=1500, n_features=20, random_state=0)  # X: 240 kB, out of band
GRID = {"C": [0.01, 0.1, 1.0, 10.0]}


@pytest.fixture(scope="module")
def pool(cluster):
    with DaskWorkers(cluster) as pool:
        yield pool


def same_cv_results(a, b):
    keys = [k for k in b.cv_results_ if "time" not in k]
    for key in keys:
        if np.asarray(b.cv_results_[key]).dtype.kind == "f":
            np.testing.assert_array_equal(a.cv_results_[key], b.cv_results_[key], err_msg=key)
        else:
            assert list(a.cv_results_[key]) == list(b.cv_results_[key]), key


def test_grid_search_cv_equals_its_loky_run(pool):
    with joblib.parallel_config(backend="hpsearch", workers=pool):
        ours = GridSearchCV(LogisticRegression(), GRID, n_jobs=-1).fit(X, Y)
    with joblib.parallel_config(backend="loky"):
        loky = GridSearchCV(LogisticRegression(), GRID, n_jobs=2).fit(X, Y)
    same_cv_results(ours, loky)
    assert ours.best_params_ == loky.best_params_
    assert pool.stats["calls"] > 0


def test_x_travels_once_per_worker_across_three_cross_val_score_calls(pool):
    X2 = X + 1.0  # data no other test sent
    x_id = buffer_id(X2)
    sent = pool.stats["buffer_bytes_sent"]
    with joblib.parallel_config(backend="hpsearch", workers=pool):
        scores = [cross_val_score(LogisticRegression(C=c), X2, Y, n_jobs=-1) for c in (0.1, 1.0, 10.0)]
    expected = [cross_val_score(LogisticRegression(C=c), X2, Y) for c in (0.1, 1.0, 10.0)]
    np.testing.assert_array_equal(scores, expected)
    holders = [a for a, s in pool.worker_stats().items() if x_id in s["buffers"]]
    assert len(holders) == 2  # both workers ran folds...
    # ...and 15 folds (5 batches or more) sent X's bytes once to each of them.
    assert pool.stats["buffer_bytes_sent"] - sent == len(holders) * X2.nbytes


def test_cross_validate_forest_and_permutation_importance(pool):
    check_sklearn_parallel_calls(pool)


def check_sklearn_parallel_calls(pool):
    """``cross_validate``, a forest's ``n_jobs`` and ``permutation_importance`` under
    the backend on ``pool`` equal their serial runs (shared with the ZeroMQ pools' tests)."""
    with joblib.parallel_config(backend="hpsearch", workers=pool):
        ours = cross_validate(LogisticRegression(), X, Y, n_jobs=-1)["test_score"]
        forest = RandomForestClassifier(n_estimators=8, n_jobs=-1, random_state=0).fit(X, Y)
        importance = permutation_importance(forest, X, Y, n_jobs=-1, n_repeats=2, random_state=0)
    np.testing.assert_array_equal(ours, cross_validate(LogisticRegression(), X, Y)["test_score"])
    reference = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, Y)
    np.testing.assert_array_equal(forest.predict_proba(X), reference.predict_proba(X))
    expected = permutation_importance(reference, X, Y, n_repeats=2, random_state=0)
    np.testing.assert_array_equal(importance.importances, expected.importances)


def test_errors_raised_in_a_batch_reach_the_caller(pool):
    def fail(i):
        raise ValueError(f"bad item {i}")

    with joblib.parallel_config(backend="hpsearch", workers=pool):
        with pytest.raises(ValueError, match="bad item"):
            joblib.Parallel(n_jobs=-1)(joblib.delayed(fail)(i) for i in range(3))


def test_threads():
    with joblib.parallel_config(backend="hpsearch", workers=2):
        ours = GridSearchCV(LogisticRegression(), GRID, n_jobs=-1).fit(X, Y)
    same_cv_results(ours, GridSearchCV(LogisticRegression(), GRID).fit(X, Y))


@pytest.mark.parametrize("workers, match", [
    (RemoteWorkers("tcp://127.0.0.1:0"), r"trust_workers=True"),
    ("tcp://scheduler:8786", "needs workers= a number of local workers"),
])
def test_refused_workers(workers, match):
    with pytest.raises(InvalidParameterError, match=match):
        with joblib.parallel_config(backend="hpsearch", workers=workers):
            joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(i) for i in range(2))
