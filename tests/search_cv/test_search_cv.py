"""hpsearch's search classes as scikit-learn estimators: nested CV, pipelines, clone,
pickle, workers, and scikit-optimize's BayesSearchCV arguments."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn import model_selection as sk
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from hpsearch import (
    BayesSearchCV,
    GridSearchCV,
    Integer,
    LocalProcesses,
    RandomizedSearchCV,
    Real,
    ThreadWorkers,
)
from hpsearch._engine import CallerThreadWorker, make_pools

GRID = {"C": [0.1, 1.0, 10.0]}


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=120, n_features=6, random_state=0)


@pytest.mark.slow
def test_nested_cv_and_a_search_in_a_pipeline_on_local_processes_give_scikit_learns_scores(data):
    X, y = data
    with LocalProcesses(2) as pool:
        ours = cross_val_score(GridSearchCV(SVC(), GRID, cv=3, workers=pool), X, y, cv=3)
        theirs = cross_val_score(sk.GridSearchCV(SVC(), GRID, cv=3), X, y, cv=3)
        np.testing.assert_array_equal(ours, theirs)

        def pipe(search_cls, **kw):
            return Pipeline([
                ("scale", StandardScaler()),
                ("search", search_cls(LogisticRegression(), GRID, cv=3, return_train_score=True, **kw)),
            ])

        ours_pipe = pipe(GridSearchCV, workers=pool).fit(X, y)
        theirs_pipe = pipe(sk.GridSearchCV).fit(X, y)
    assert ours_pipe.score(X, y) == theirs_pipe.score(X, y)
    ours_cv, theirs_cv = ours_pipe[-1].cv_results_, theirs_pipe[-1].cv_results_
    for key in ("mean_test_score", "split2_test_score", "mean_train_score"):
        np.testing.assert_array_equal(ours_cv[key], theirs_cv[key], err_msg=key)
    np.testing.assert_array_equal(ours_pipe.predict_proba(X), theirs_pipe.predict_proba(X))


def test_a_fitted_search_is_scikit_learns_in_every_attribute_and_method(data):
    X, y = data
    ours = GridSearchCV(LogisticRegression(), GRID, cv=3, workers=2).fit(X, y)
    theirs = sk.GridSearchCV(LogisticRegression(), GRID, cv=3).fit(X, y)
    assert isinstance(ours, sk.GridSearchCV)
    assert sorted(ours.cv_results_) == sorted(theirs.cv_results_)
    assert ours.best_params_ == theirs.best_params_ and ours.best_index_ == theirs.best_index_
    assert ours.best_score_ == theirs.best_score_
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        np.testing.assert_array_equal(getattr(ours, method)(X), getattr(theirs, method)(X))
    assert ours.score(X, y) == theirs.score(X, y)
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    assert ours.n_features_in_ == theirs.n_features_in_ == 6
    assert "workers" in ours._repr_html_() and "LogisticRegression" in ours._repr_html_()


def test_feature_names_and_transform_come_from_the_best_estimator():
    pd = pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True, as_frame=True)
    search = GridSearchCV(
        Pipeline([("scale", StandardScaler())]), {"scale__with_mean": [True, False]},
        cv=2, scoring=lambda est, X, y: 0.0,
    ).fit(X, y)
    assert list(search.feature_names_in_) == list(X.columns)
    assert isinstance(search.transform(X), (np.ndarray, pd.DataFrame))


def test_clone_keeps_every_parameter_and_shares_the_worker_pool():
    pool = ThreadWorkers(2)
    search = RandomizedSearchCV(SVC(), GRID, n_iter=2, random_state=3, workers=pool, n_jobs=4)
    copy = clone(search)
    assert copy.workers is pool  # a pool is a live resource: clones share it
    assert copy.estimator is not search.estimator
    assert copy.get_params(deep=False).keys() == search.get_params(deep=False).keys()
    assert copy.n_iter == 2 and copy.random_state == 3 and copy.n_jobs == 4


def test_a_fitted_search_pickles_without_its_worker_pool(data):
    X, y = data
    with LocalProcesses(1) as pool:
        search = GridSearchCV(SVC(), GRID, cv=2, workers=[pool, 1]).fit(X, y)
    restored = pickle.loads(pickle.dumps(search))
    assert restored.workers == [1]  # the pool (sockets, threads) is not pickled
    np.testing.assert_array_equal(restored.predict(X), search.predict(X))
    assert restored.best_params_ == search.best_params_
    assert pickle.loads(pickle.dumps(GridSearchCV(SVC(), GRID, workers=2))).workers == 2


def test_n_jobs_alone_keeps_its_meaning():
    pools, owned = make_pools(None, None)
    assert isinstance(pools[0], CallerThreadWorker) and owned == []  # sequential, in this thread
    pools, owned = make_pools(None, 3)
    assert isinstance(pools[0], ThreadWorkers) and pools[0].n == 3 and owned == pools
    pools, _ = make_pools(None, -1)
    from joblib import cpu_count

    assert pools[0].n == cpu_count()


def test_workers_is_checked_with_a_message_naming_the_fix(data):
    X, y = data
    with pytest.raises(ValueError, match="workers must be a number of local workers.*LocalProcesses"):
        GridSearchCV(SVC(), GRID, workers="all").fit(X, y)
    with pytest.raises(TypeError, match="workers must be >= 1, got 0"):  # also a TypeError, as scikit-learn's
        GridSearchCV(SVC(), GRID, workers=0).fit(X, y)


def test_bad_constructor_arguments_get_scikit_learns_errors(data):
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = data
    with pytest.raises(InvalidParameterError, match="The 'n_iter' parameter of RandomizedSearchCV"):
        RandomizedSearchCV(SVC(), GRID, n_iter=0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="The 'scoring' parameter of GridSearchCV"):
        GridSearchCV(SVC(), GRID, scoring="acuracy").fit(X, y)
    with pytest.raises(InvalidParameterError, match="The 'n_points' parameter of BayesSearchCV"):
        BayesSearchCV(SVC(), {"C": Real(0.1, 1.0)}, n_points=0).fit(X, y)


def test_bayes_search_takes_scikit_optimize_arguments(data):
    skopt_space = pytest.importorskip("skopt.space")
    X, y = data
    spaces = [
        ({"C": skopt_space.Real(1e-2, 1e2, prior="log-uniform"), "kernel": ["rbf", "linear"]}, 4),
        {"C": (0.1, 10.0), "degree": Integer(2, 3), "kernel": ["poly"]},
    ]
    search = BayesSearchCV(
        SVC(), spaces, n_iter=3, cv=2, n_points=2, random_state=0, error_score=np.nan,
        optimizer_kwargs={"n_initial_points": 2, "base_estimator": "RF", "acq_func": "EI"}, workers=2,
    ).fit(X, y)
    params = search.cv_results_["params"]
    assert len(params) == search.total_iterations == 4 + 3
    assert all(p["kernel"] in ("rbf", "linear") for p in params[:4])
    assert all(p["kernel"] == "poly" and 0.1 <= p["C"] <= 10.0 for p in params[4:])
    again = clone(search).set_params(workers=1).fit(X, y)
    assert again.cv_results_["params"] == params  # seeded: the same candidates on any workers
    with pytest.raises(ValueError, match="optimizer_kwargs: unknown key.*'acq_optimizer'"):
        BayesSearchCV(SVC(), {"C": Real(0.1, 1.0)}, optimizer_kwargs={"acq_optimizer": "lbfgs"}).fit(X, y)


def test_bayes_search_fit_params_and_refit_like_scikit_optimize():
    X, y = load_iris(return_X_y=True)
    weights = np.linspace(0.5, 1.5, len(y))
    search = BayesSearchCV(
        Ridge(), {"alpha": Real(0.1, 10.0)}, n_iter=3, cv=3, random_state=1,
        fit_params={"sample_weight": weights}, optimizer_kwargs={"n_initial_points": 3},
    ).fit(X, y)
    best = Ridge(**search.best_params_).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(search.predict(X), best.predict(X))
    assert search.error_score == "raise" and search.n_jobs == 1  # scikit-optimize's defaults


def test_a_strategy_is_told_the_metric_refit_ranks_by():
    from hpsearch._engine import _score_key

    assert _score_key(True, {"score": None}) == "score"
    assert _score_key("f1", {"accuracy": None, "f1": None}) == "f1"
    assert _score_key(False, {"accuracy": None, "f1": None}) == "accuracy"
    assert _score_key("acc", {}) == "acc"  # a callable scoring: names known from results only
    assert _score_key("anything", {"score": None}) == "score"  # refit as a string, one metric
