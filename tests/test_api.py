"""run_search against scikit-learn's own search estimators, on real fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, RandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from scipy.stats import loguniform

from hpsearch import run_search

SVC_GRID = {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def svc_sklearn(digits):
    X, y = digits
    return GridSearchCV(SVC(), SVC_GRID, cv=5, n_jobs=1).fit(X, y)


@pytest.fixture(scope="module")
def svc_hpsearch(digits):
    X, y = digits
    return run_search(SVC(), SVC_GRID, X, y, cv=5, workers=2, progress=False)


def assert_same_scores(ours: dict, theirs: dict, metrics: list[str]) -> None:
    assert ours["params"] == theirs["params"]
    for m in metrics:
        for key in [k for k in theirs if k.endswith(f"test_{m}") and not k.startswith("rank")]:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(ours[f"rank_test_{m}"], theirs[f"rank_test_{m}"])
        assert ours[f"rank_test_{m}"].dtype == theirs[f"rank_test_{m}"].dtype


@pytest.mark.slow
def test_svc_grid_equals_gridsearchcv(svc_hpsearch, svc_sklearn):
    ours, theirs = svc_hpsearch.cv_results_, svc_sklearn.cv_results_
    assert_same_scores(ours, theirs, ["score"])
    assert sorted(ours) == sorted(theirs)
    for key in ("param_C", "param_gamma"):
        assert isinstance(ours[key], np.ma.MaskedArray)
        assert ours[key].dtype == theirs[key].dtype
        np.testing.assert_array_equal(ours[key], theirs[key])
    assert svc_hpsearch.best_params_ == svc_sklearn.best_params_
    assert svc_hpsearch.best_index_ == svc_sklearn.best_index_
    assert svc_hpsearch.best_score_ == pytest.approx(svc_sklearn.best_score_, abs=1e-12)
    assert svc_hpsearch.n_splits_ == 5 and svc_hpsearch.multimetric_ is False
    assert svc_hpsearch.refit_time_ > 0
    X, y = load_digits(return_X_y=True)
    np.testing.assert_array_equal(
        svc_hpsearch.best_estimator_.predict(X), svc_sklearn.best_estimator_.predict(X)
    )


@pytest.mark.slow
def test_cv_results_is_a_dataframe(svc_hpsearch):
    frame = pd.DataFrame(svc_hpsearch.cv_results_)
    assert len(frame) == 12
    assert frame.loc[frame["rank_test_score"].idxmin(), "params"] == svc_hpsearch.best_params_
    summary = svc_hpsearch.summary(top=3)
    assert "rank" in summary and "top 3 of 12 candidates" in summary


@pytest.mark.slow
def test_pipeline_multimetric_equals_gridsearchcv(digits):
    X, y = digits
    # Converged fits: an unconverged lbfgs run depends on BLAS summation order, which
    # differs between thread counts (hpsearch limits BLAS threads per fit).
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=2000))])
    grid = {"lr__C": [0.001, 0.01, 0.1], "lr__fit_intercept": [True, False]}
    scoring = ["accuracy", "f1_macro"]
    theirs = GridSearchCV(pipe, grid, scoring=scoring, refit="f1_macro", cv=3).fit(X, y)
    ours = run_search(pipe, grid, X, y, scoring=scoring, refit="f1_macro", cv=3, workers=2, progress=False)
    assert_same_scores(ours.cv_results_, theirs.cv_results_, scoring)
    assert ours.multimetric_ is True
    assert set(ours.scorer_) == {"accuracy", "f1_macro"}
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1e-12)


@pytest.mark.slow
def test_results_do_not_depend_on_the_number_of_workers(digits):
    X, y = digits
    X, y = X[:600], y[:600]
    grid = {"C": [0.1, 1, 10], "gamma": [1e-4, 1e-3, 1e-2]}
    one = run_search(SVC(), grid, X, y, cv=5, workers=1, progress=False).cv_results_
    four = run_search(SVC(), grid, X, y, cv=5, workers=4, progress=False).cv_results_
    assert one["params"] == four["params"]
    for key in one:
        if "test_" in key:
            np.testing.assert_array_equal(one[key], four[key], err_msg=key)


def test_random_search_is_seeded_and_matches_randomizedsearchcv():
    X, y = load_iris(return_X_y=True)
    space = {"C": loguniform(1e-2, 1e2), "kernel": ["rbf", "linear"]}
    a = run_search(SVC(), space, X, y, strategy="random", n_iter=6, cv=3, random_state=7, progress=False)
    b = run_search(SVC(), space, X, y, strategy="random", n_iter=6, cv=3, random_state=7, workers=3, progress=False)
    theirs = RandomizedSearchCV(SVC(), space, n_iter=6, cv=3, random_state=7).fit(X, y)
    assert a.cv_results_["params"] == b.cv_results_["params"] == theirs.cv_results_["params"]
    np.testing.assert_array_equal(a.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"])
    c = run_search(SVC(), space, X, y, strategy="random", n_iter=6, cv=3, random_state=8, progress=False)
    assert c.cv_results_["params"] != a.cv_results_["params"]


def test_random_search_caps_n_iter_at_the_grid_size():
    X, y = load_iris(return_X_y=True)
    # scikit-learn's own warning (ParameterSampler), as RandomizedSearchCV gives it
    with pytest.warns(UserWarning, match="total space of parameters 4 is smaller than n_iter=10"):
        result = run_search(SVC(), {"C": [1, 10], "kernel": ["rbf", "linear"]}, X, y,
                            strategy="random", n_iter=10, cv=3, random_state=0, progress=False)
    assert len(result.cv_results_["params"]) == 4
    assert len({tuple(sorted(p.items())) for p in result.cv_results_["params"]}) == 4


def test_train_scores_groups_and_fit_params():
    X, y = load_iris(return_X_y=True)
    groups = np.arange(len(y)) % 5
    weights = np.linspace(0.5, 2.0, len(y))
    grid = [{"kernel": ["linear"], "C": [1, 10]}, {"kernel": ["rbf"], "gamma": [0.1, 1.0]}]
    cv = GroupKFold(n_splits=5)
    theirs = GridSearchCV(SVC(), grid, cv=cv, return_train_score=True).fit(
        X, y, groups=groups, sample_weight=weights
    )
    ours = run_search(SVC(), grid, X, y, cv=cv, groups=groups, fit_params={"sample_weight": weights},
                      return_train_score=True, workers=2, progress=False)
    assert_same_scores(ours.cv_results_, theirs.cv_results_, ["score"])
    np.testing.assert_allclose(ours.cv_results_["mean_train_score"], theirs.cv_results_["mean_train_score"], atol=1e-12)
    # Sub-spaces: a parameter absent from a candidate is masked, as in scikit-learn.
    np.testing.assert_array_equal(ours.cv_results_["param_gamma"].mask, theirs.cv_results_["param_gamma"].mask)


def grid_point(grid: dict, index: int) -> dict:
    from sklearn.model_selection import ParameterGrid

    return list(ParameterGrid(grid))[index]


def test_callable_refit_and_refit_false():
    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 1, 100]}

    def lowest_c(cv_results):
        return int(np.argmin(cv_results["param_C"]))

    ours = run_search(SVC(), grid, X, y, cv=3, refit=lowest_c, progress=False)
    assert ours.best_index_ == 0 and ours.best_params_ == {"C": 0.01}
    # As on scikit-learn's search: attributes that do not apply are not set.
    assert not hasattr(ours, "best_score_") and hasattr(ours, "best_estimator_")
    no_refit = run_search(SVC(), grid, X, y, cv=3, refit=False, progress=False)
    best = int(np.argmin(no_refit.cv_results_["rank_test_score"]))
    assert not hasattr(no_refit, "best_estimator_") and no_refit.best_params_ == grid_point(grid, best)
    multi = run_search(SVC(), grid, X, y, cv=3, scoring=["accuracy", "f1_macro"], refit=False, progress=False)
    assert not hasattr(multi, "best_params_") and "mean_test_f1_macro" in multi.cv_results_


def test_progress_bar_shows_tasks_and_best_score(capsys):
    X, y = load_iris(return_X_y=True)
    result = run_search(SVC(), {"C": [0.1, 1, 10]}, X, y, cv=3, workers=2, progress=True)
    err = capsys.readouterr().err
    assert "9/9" in err and f"best={result.best_score_:.4f}" in err
    run_search(SVC(), {"C": [0.1, 1]}, X, y, cv=3, progress=False)
    assert capsys.readouterr().err == ""


def test_precomputed_kernel_is_split_on_both_axes_like_gridsearchcv():
    X, y = load_iris(return_X_y=True)
    gram = X @ X.T
    grid = {"C": [0.01, 0.1, 1.0]}
    theirs = GridSearchCV(SVC(kernel="precomputed"), grid, cv=3).fit(gram, y)
    ours = run_search(SVC(kernel="precomputed"), grid, gram, y, cv=3, workers=2, progress=False)
    assert_same_scores(ours.cv_results_, theirs.cv_results_, ["score"])
