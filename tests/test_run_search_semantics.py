"""run_search has scikit-learn's search semantics: each behaviour below is one that
GridSearchCV has and that run_search once lacked."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.datasets import load_iris, make_blobs
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import accuracy_score, get_scorer, make_scorer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, LinearSVC
from sklearn.cluster import KMeans

from hpsearch import run_search


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def test_callbacks_fire(iris):
    from sklearn.callback.tests._utils import RecordingCallback

    X, y = iris
    callback = RecordingCallback()
    run_search(SVC(), {"C": [0.1, 1]}, X, y, cv=2, callbacks=[callback], progress=False)
    evaluations = [e for e in callback.record if e["context"].task_name == "candidate-split-evaluation"]
    assert callback.count_hooks("on_fit_task_begin") == 1 + 1 + 1 + 4  # root, search, refit, 4 fits
    assert len(evaluations) == 2 * 4  # begin and end of each fit


def test_errors_are_scikit_learns(iris):
    X, y = iris
    with pytest.raises(IndexError, match="best_index_ index out of range"):
        run_search(SVC(), {"C": [0.1, 1]}, X, y, cv=2, refit=lambda results: 5, progress=False)

    class NoSplits(KFold):
        def split(self, X, y=None, groups=None):
            return iter([])

    with pytest.raises(ValueError, match="cv.split and cv.get_n_splits return inconsistent results"):
        run_search(SVC(), {"C": [0.1]}, X, y, cv=NoSplits(3), progress=False)
    with pytest.raises(ValueError, match="No fits were performed"):
        run_search(SVC(), {"C": [0.1]}, X, y, cv=[], progress=False)


class MinimalTransformer(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def test_a_pipeline_step_given_by_the_grid_is_searched(iris):
    X, y = iris
    pipe = Pipeline([("trs", MinimalTransformer()), ("clf", None)])
    grid = {"clf": [LinearSVC()], "clf__C": [0.01, 1.0]}
    ours = run_search(pipe, grid, X, y, cv=3, scoring="accuracy", workers=2, progress=False)
    theirs = GridSearchCV(pipe, grid, cv=3, scoring="accuracy").fit(X, y)
    np.testing.assert_array_equal(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"])
    assert grid["clf"][0].__dict__.get("coef_") is None  # the grid's estimator is never fitted


class FailingClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, fail=False):
        self.fail = fail

    def fit(self, X, y):
        if self.fail:
            raise ValueError("asked to fail")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_fit_failed_warning_is_scikit_learns_and_non_finite_scores_warn(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitFailedWarning)  # a user's filter for scikit-learn's warning
        with pytest.raises(FitFailedWarning, match="3 fits failed out of a total of 6"):
            run_search(FailingClassifier(), {"fail": [False, True]}, X, y, cv=3, progress=False)
    with pytest.warns(UserWarning, match="One or more of the test scores are non-finite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitFailedWarning)
            run_search(FailingClassifier(), {"fail": [False, True]}, X, y, cv=3, progress=False)


def test_a_callable_scoring_may_return_a_dict_and_refit_may_name_a_single_metric(iris):
    X, y = iris

    def two_metrics(est, X, y):
        pred = est.predict(X)
        return {"acc": accuracy_score(y, pred), "err": 1 - accuracy_score(y, pred)}

    ours = run_search(SVC(), {"C": [0.1, 1]}, X, y, cv=3, scoring=two_metrics, refit="acc", workers=2, progress=False)
    theirs = GridSearchCV(SVC(), {"C": [0.1, 1]}, cv=3, scoring=two_metrics, refit="acc").fit(X, y)
    assert ours.multimetric_ and "mean_test_err" in ours.cv_results_
    np.testing.assert_array_equal(ours.cv_results_["mean_test_acc"], theirs.cv_results_["mean_test_acc"])
    assert ours.best_params_ == theirs.best_params_
    single = run_search(SVC(), {"C": [0.1, 1]}, X, y, cv=3, scoring="accuracy", refit="accuracy", progress=False)
    assert single.best_params_ == theirs.best_params_ and hasattr(single, "best_estimator_")


@pytest.mark.parametrize("verbose", [1, 3, 10])
def test_verbose_prints_what_scikit_learn_prints(iris, capsys, verbose):
    X, y = iris
    run_search(SVC(), {"C": [0.1, 1]}, X, y, cv=3, verbose=verbose, progress=False)
    ours = capsys.readouterr().out
    GridSearchCV(SVC(), {"C": [0.1, 1]}, cv=3, verbose=verbose).fit(X, y)
    theirs = capsys.readouterr().out
    assert "Fitting 3 folds for each of 2 candidates, totalling 6 fits" in ours

    def lines(text):  # timings differ
        return sorted(re.sub(r"time=\s*[\d.]+s", "time=", line).replace(".", "") for line in text.splitlines())

    assert lines(ours) == lines(theirs)


def test_metadata_routing(iris):
    X, y = iris
    weights = np.linspace(0.1, 2.0, len(y))
    with config_context(enable_metadata_routing=True):
        scorer = get_scorer("accuracy").set_score_request(sample_weight=True)
        svc = SVC().set_fit_request(sample_weight=False)  # weights only the scores
        ours = run_search(svc, {"C": [0.1, 1]}, X, y, cv=3, scoring=scorer, fit_params={"sample_weight": weights},
                          workers=2, progress=False)
        theirs = GridSearchCV(svc, {"C": [0.1, 1]}, cv=3, scoring=scorer).fit(X, y, sample_weight=weights)
        unweighted = GridSearchCV(svc, {"C": [0.1, 1]}, cv=3).fit(X, y)
    np.testing.assert_array_equal(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"])
    assert not np.array_equal(ours.cv_results_["mean_test_score"], unweighted.cv_results_["mean_test_score"])
    with config_context(enable_metadata_routing=True), pytest.raises(ValueError, match="sample_weight"):
        # not requested by the scorer: scikit-learn's routing error, before any fit
        run_search(SVC(), {"C": [0.1]}, X, y, cv=3, scoring="accuracy", fit_params={"sample_weight": weights},
                   progress=False)


def test_a_scorer_that_cannot_weight_scores_warns(iris):
    X, y = iris

    def unweighted(est, X, y):
        return accuracy_score(y, est.predict(X))

    with pytest.warns(UserWarning, match="does not support sample_weight"):
        run_search(SVC(), {"C": [1]}, X, y, cv=3, scoring=unweighted,
                   fit_params={"sample_weight": np.ones(len(y))}, progress=False)


def test_without_y_a_callable_scorer_gets_two_arguments():
    X, _ = make_blobs(n_samples=60, random_state=0)
    calls = []

    def inertia(est, X):
        calls.append(len(X))
        return -est.inertia_

    result = run_search(KMeans(n_init=1, random_state=0), {"n_clusters": [2, 3]}, X, cv=2, scoring=inertia,
                        progress=False)
    assert len(calls) == 4 and result.best_params_ == {"n_clusters": 3}


def test_best_params_keep_numpy_types(iris):
    X, y = iris
    result = run_search(SVC(), {"C": np.array([0.5, 1.0])}, X, y, cv=2, progress=False)
    theirs = GridSearchCV(SVC(), {"C": np.array([0.5, 1.0])}, cv=2).fit(X, y)
    assert type(result.best_params_["C"]) is type(theirs.best_params_["C"]) is np.float64


def test_make_scorer_needs_no_change(iris):
    X, y = iris
    result = run_search(SVC(), {"C": [1]}, X, y, cv=2, scoring=make_scorer(accuracy_score), progress=False)
    assert result.best_score_ > 0.9
