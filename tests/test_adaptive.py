"""Adaptive search end to end: successive halving against scikit-learn's, ASHA,
Hyperband and pruning on real fits, and bad input refused before any fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV, KFold
from sklearn.svm import SVC

from hpsearch import InvalidParameterError, SearchSpaceError, run_search

SVC_GRID = {"C": [0.01, 0.1, 1, 10, 100], "gamma": [0.001, 0.01, 0.1, 1]}
FOREST_SPACE = {"max_depth": [2, 3, 4, 5, None], "min_samples_leaf": [1, 2, 4, 8]}


@pytest.fixture(scope="module")
def data():
    return make_classification(600, 10, random_state=0)


def assert_same_as_sklearn(ours, theirs) -> None:
    o, t = ours.cv_results_, theirs.cv_results_
    assert o["params"] == t["params"]
    for key in ("iter", "n_resources"):
        np.testing.assert_array_equal(o[key], t[key])
        assert o[key].dtype == t[key].dtype
    for key in [k for k in t if "_test_" in k or "_train_" in k]:
        if key.startswith("rank"):
            np.testing.assert_array_equal(o[key], t[key], err_msg=key)
        else:
            np.testing.assert_allclose(o[key], t[key], rtol=0, atol=1e-12, err_msg=key)
    assert sorted(k for k in t if "time" not in k) == sorted(k for k in o if "time" not in k)
    assert ours.best_index_ == theirs.best_index_
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1e-12)
    for name in ("n_resources_", "n_candidates_", "n_iterations_", "n_required_iterations_",
                 "n_possible_iterations_", "min_resources_", "max_resources_", "n_remaining_candidates_"):
        assert getattr(ours, name) == getattr(theirs, name), name


CONFIGS = {
    "grid-n_samples": (
        lambda: HalvingGridSearchCV(SVC(), SVC_GRID, factor=2, random_state=0, cv=3, return_train_score=True),
        dict(estimator=SVC(), space=SVC_GRID, strategy="halving", factor=2, random_state=0, cv=3,
             return_train_score=True),
    ),
    "grid-aggressive-min_resources": (
        lambda: HalvingGridSearchCV(SVC(), SVC_GRID, factor=3, min_resources=150, aggressive_elimination=True,
                                    random_state=1, cv=4, return_train_score=False),
        dict(estimator=SVC(), space=SVC_GRID, strategy="halving", factor=3, min_resources=150,
             aggressive_elimination=True, random_state=1, cv=4),
    ),
    "random-n_estimators": (
        lambda: HalvingRandomSearchCV(RandomForestClassifier(random_state=0), FOREST_SPACE, resource="n_estimators",
                                      max_resources=30, random_state=1, cv=3, return_train_score=False),
        dict(estimator=RandomForestClassifier(random_state=0), space=FOREST_SPACE, strategy="halving_random",
             n_iter="exhaust", min_resources="smallest", resource="n_estimators", max_resources=30, random_state=1,
             cv=3),
    ),
    "random-distribution-n_samples-float-factor": (
        lambda: HalvingRandomSearchCV(LogisticRegression(), {"C": loguniform(1e-3, 1e2)}, n_candidates=12,
                                      factor=2.5, random_state=3, cv=KFold(3), return_train_score=False),
        dict(estimator=LogisticRegression(), space={"C": loguniform(1e-3, 1e2)}, strategy="halving_random",
             n_iter=12, factor=2.5, min_resources="smallest", random_state=3, cv=KFold(3)),
    ),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_synchronous_halving_equals_scikit_learn(config, data):
    X, y = data
    make_theirs, kwargs = CONFIGS[config]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # n_candidates capped at the grid size, in both
        theirs = make_theirs().fit(X, y)
        kwargs = dict(kwargs)
        ours = run_search(kwargs.pop("estimator"), kwargs.pop("space"), X, y, workers=2, progress=False, **kwargs)
    assert_same_as_sklearn(ours, theirs)
    np.testing.assert_array_equal(ours.best_estimator_.predict(X), theirs.best_estimator_.predict(X))


def test_asha_runs_every_promotion_of_synchronous_halving(data):
    X, y = data
    sync = run_search(SVC(), SVC_GRID, X, y, strategy="halving", factor=2, random_state=0, cv=3,
                      workers=2, progress=False)
    asha = run_search(SVC(), SVC_GRID, X, y, strategy="halving", factor=2, random_state=0, cv=3,
                      workers=4, progress=False, asynchronous=True)

    def runs(result):
        r = result.cv_results_
        return {(tuple(sorted(p.items())), int(i)): s for p, i, s in zip(r["params"], r["iter"], r["mean_test_score"])}

    sync_runs, asha_runs = runs(sync), runs(asha)
    assert len(asha_runs) == len(asha.cv_results_["params"])  # no (configuration, rung) twice
    for key, score in asha_runs.items():  # the same subsampled folds: the same scores
        if key in sync_runs:
            assert score == pytest.approx(sync_runs[key], abs=1e-12)
    assert {k for k in sync_runs if k[1] == 0} == {k for k in asha_runs if k[1] == 0}
    # every configuration synchronous halving promotes from rung 0 is promoted by ASHA too,
    # but for ties at the cut (the two break ties differently)
    rung0 = {k[0]: s for k, s in sync_runs.items() if k[1] == 0}
    cut = min(rung0[k[0]] for k in sync_runs if k[1] == 1)
    assert {k for k in sync_runs if k[1] == 1 and rung0[k[0]] > cut} <= set(asha_runs)
    assert asha.best_params_ == sync.best_params_
    assert asha.cv_results_["n_resources"].max() == 592
    # promotions made for idle slots are marked (none at rung 0); synchronous halving has
    # no such column (scikit-learn's cv_results_)
    idle = asha.cv_results_["idle_promotion"]
    assert idle.dtype == bool and not idle[asha.cv_results_["iter"] == 0].any()
    assert "idle_promotion" not in sync.cv_results_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_hyperband_on_an_iteration_parameter(data):
    X, y = data
    result = run_search(SGDClassifier(random_state=0), {"alpha": loguniform(1e-6, 1e-1)}, X, y,
                        strategy="hyperband", resource="max_iter", max_resources=27, factor=3,
                        random_state=0, cv=3, workers=2, progress=False)
    r = result.cv_results_
    assert sorted(set(r["bracket"])) == [0, 1, 2, 3]
    assert set(r["n_resources"]) == {1, 3, 9, 27}
    assert all(p["max_iter"] == n for p, n in zip(r["params"], r["n_resources"]))
    assert r["n_resources"][result.best_index_] == 27
    top = r["mean_test_score"][r["n_resources"] == 27]
    assert result.best_score_ == np.nanmax(top)
    assert result.n_brackets_ == 4 and sum(result.n_candidates_) == len(r["params"])
    assert result.best_estimator_.max_iter == 27


def test_asynchronous_hyperband_on_samples(data):
    X, y = data
    result = run_search(LogisticRegression(), {"C": loguniform(1e-3, 1e2)}, X, y, strategy="hyperband",
                        asynchronous=True, random_state=0, cv=3, workers=3, progress=False)
    r = result.cv_results_
    assert r["n_resources"].max() == 600 and r["n_resources"].min() >= 3 * 2 * 2
    assert result.best_score_ > 0.8


def test_pruning_skips_folds_and_keeps_the_best(data):
    X, y = data
    full = run_search(SVC(), SVC_GRID, X, y, cv=5, workers=2, progress=False)
    pruned = run_search(SVC(), SVC_GRID, X, y, cv=5, workers=2, progress=False, prune=True)
    r = pruned.cv_results_
    assert r["pruned"].dtype == bool and r["pruned"].any()
    assert pruned.best_params_ == full.best_params_
    assert pruned.best_score_ == full.best_score_
    for i in np.flatnonzero(r["pruned"]):
        folds = np.array([r[f"split{k}_test_score"][i] for k in range(5)])
        done = ~np.isnan(folds)
        assert 2 <= done.sum() < 5  # skipped after two folds at least
        np.testing.assert_array_equal(folds[done], [full.cv_results_[f"split{k}_test_score"][i]
                                                    for k in np.flatnonzero(done)])
        assert np.isnan(r["mean_test_score"][i]) and r["rank_test_score"][i] == r["rank_test_score"].max()
        assert full.cv_results_["mean_test_score"][i] < full.best_score_
    assert not pruned.fit_failures_  # a skipped fold is not a failure


def test_pruning_within_halving_compares_at_the_same_resource(data):
    X, y = data
    result = run_search(SVC(), SVC_GRID, X, y, strategy="halving", factor=2, random_state=0, cv=5,
                        workers=2, progress=False, prune=True)
    assert "pruned" in result.cv_results_ and result.best_score_ > 0.9


class NoFit(BaseEstimator, ClassifierMixin):
    """Any fit is a test failure: bad input must be refused before one."""

    def __init__(self, alpha=1.0, n_iter=10):
        self.alpha = alpha
        self.n_iter = n_iter

    def fit(self, X, y):
        raise AssertionError("fit was called")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(strategy="halving", resource="n_estimators", max_resources=10), InvalidParameterError,
     "Cannot use resource=n_estimators which is not supported by estimator NoFit.*n_iter"),
    (dict(strategy="halving", resource="n_iter"), InvalidParameterError,
     "resource can only be 'n_samples' when max_resources='auto'; give max_resources"),
    (dict(strategy="halving", min_resources=50, max_resources=20), InvalidParameterError,
     "min_resources_=50 is greater than max_resources_=20. Lower min_resources"),
    (dict(strategy="halving", min_resources=500), InvalidParameterError,
     "min_resources_=500 is greater than max_resources_=100.*at most the 100 samples"),
    (dict(strategy="halving", factor=1), InvalidParameterError, "factor must be a number > 1"),
    (dict(strategy="halving", min_resources="most"), InvalidParameterError, "min_resources must be"),
    (dict(strategy="halving_random", n_iter="exhaust"), InvalidParameterError,
     "n_candidates and min_resources cannot be both set to 'exhaust'"),
    (dict(strategy="halving", cv=KFold(3, shuffle=True)), InvalidParameterError,
     "must yield consistent folds"),
    (dict(strategy="grid", prune="yes"), InvalidParameterError, "prune must be"),
])
def test_bad_input_is_refused_before_any_fit(kwargs, error, match):
    X, y = make_classification(100, 4, random_state=0)
    with pytest.raises(error, match=match):
        run_search(NoFit(), {"alpha": [1, 2, 3]}, X, y, progress=False, **kwargs)


def test_resource_in_the_space_and_continuous_grid_are_refused():
    X, y = make_classification(100, 4, random_state=0)
    with pytest.raises(InvalidParameterError, match="Cannot use parameter n_iter as the resource"):
        run_search(NoFit(), {"n_iter": [1, 2]}, X, y, strategy="halving", resource="n_iter",
                   max_resources=10, progress=False)
    with pytest.raises(SearchSpaceError):
        run_search(NoFit(), {"alpha": loguniform(1e-3, 1)}, X, y, strategy="halving", progress=False)
    with pytest.raises(SearchSpaceError, match="needs .* distinct candidates"):
        run_search(NoFit(), {"alpha": [1, 2]}, X, y, strategy="hyperband", resource="n_iter",
                   max_resources=27, progress=False)


@pytest.mark.slow
def test_subsampled_folds_run_on_worker_processes(data):
    from hpsearch import LocalProcesses

    X, y = data
    threads = run_search(SVC(), SVC_GRID, X, y, strategy="halving", factor=2, random_state=0, cv=3,
                         workers=2, progress=False)
    with LocalProcesses(2) as pool:
        processes = run_search(SVC(), SVC_GRID, X, y, strategy="halving", factor=2, random_state=0, cv=3,
                               workers=pool, progress=False)
    for key in ("params", "iter", "n_resources", "mean_test_score", "rank_test_score"):
        np.testing.assert_array_equal(np.asarray(processes.cv_results_[key]), np.asarray(threads.cv_results_[key]))


def test_drop_in_halving_classes_equal_scikit_learns(data):
    from sklearn.base import clone

    from hpsearch import HalvingGridSearchCV as OurGrid

    X, y = data
    ours = OurGrid(SVC(), SVC_GRID, factor=2, random_state=0, cv=3, workers=2)
    assert clone(ours).get_params()["workers"] == 2
    ours.fit(X, y)
    theirs = HalvingGridSearchCV(SVC(), SVC_GRID, factor=2, random_state=0, cv=3).fit(X, y)
    assert_same_as_sklearn(ours, theirs)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.classes_.tolist() == [0, 1] and ours.n_features_in_ == 10
    with pytest.raises(ValueError, match="min_resources_=700 is greater than max_resources_=600"):
        OurGrid(SVC(), SVC_GRID, min_resources=700).fit(X, y)


def test_drop_in_hyperband(data):
    from hpsearch import HyperbandSearchCV

    X, y = data
    search = HyperbandSearchCV(LogisticRegression(), {"C": loguniform(1e-3, 1e2)}, min_resources=50,
                               random_state=0, cv=3, workers=2, asynchronous=True).fit(X, y)
    assert search.n_brackets_ == 3 and search.cv_results_["n_resources"][search.best_index_] == 600
    assert search.score(X, y) > 0.8


def test_prune_on_the_search_classes(data):
    from sklearn.base import clone

    from hpsearch import GridSearchCV, RandomizedSearchCV

    X, y = data
    full = GridSearchCV(SVC(), SVC_GRID, cv=5, workers=2).fit(X, y)
    search = GridSearchCV(SVC(), SVC_GRID, cv=5, workers=2, prune=True)
    assert clone(search).get_params()["prune"] is True
    search.fit(X, y)
    assert search.cv_results_["pruned"].any() and "pruned" not in full.cv_results_
    assert search.best_params_ == full.best_params_ and search.best_score_ == full.best_score_
    random = RandomizedSearchCV(SVC(), SVC_GRID, n_iter=8, cv=5, random_state=0, workers=2, prune=True).fit(X, y)
    assert random.cv_results_["pruned"].dtype == bool
    with pytest.raises(InvalidParameterError, match="prune must be"):
        GridSearchCV(NoFit(), {"alpha": [1, 2]}, prune="yes").fit(X, y)
