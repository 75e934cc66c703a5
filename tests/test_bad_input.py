"""Bad input is refused before any fit runs; failing fits are data, not crashes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.svm import SVC

from hpsearch import (
    FitFailedError,
    FitFailedWarning,
    InvalidParameterError,
    Real,
    SearchSpaceError,
    run_search,
)


class CountingSVC(SVC):
    """An SVC that counts its fits, to prove that bad input fails before any fit."""

    fits = 0

    def fit(self, X, y, **kw):
        type(self).fits += 1
        return super().fit(X, y, **kw)


class FailingClassifier(ClassifierMixin, BaseEstimator):
    """Fails to fit when ``fail`` is True (or on the listed CV folds' sizes)."""

    def __init__(self, fail=False, fail_on_n_samples=None):
        self.fail = fail
        self.fail_on_n_samples = fail_on_n_samples

    def fit(self, X, y):
        if self.fail or (self.fail_on_n_samples is not None and len(X) == self.fail_on_n_samples):
            raise ValueError("this fit was asked to fail")
        self.classes_ = np.unique(y)
        self.majority_ = np.bincount(y).argmax()
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


@pytest.fixture
def iris():
    CountingSVC.fits = 0
    return load_iris(return_X_y=True)


# Where scikit-learn's GridSearchCV / RandomizedSearchCV refuse the same input, the
# exception type and message are theirs (run_search runs the same engine).
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        # every fit fails at set_params: scikit-learn's "All the 6 fits failed", naming the valid ones
        ({"space": {"Cee": [1, 2]}}, FitFailedError, r"Invalid parameter 'Cee'.*Valid parameters are: \[.*'C'"),
        ({"space": {"C": []}}, ValueError, "Parameter grid for parameter 'C' need to be a non-empty sequence"),
        ({"space": []}, ValueError, "No fits were performed"),
        ({"space": {"C": 1.0}}, TypeError, r"'C' needs to be a list or a numpy array, but got 1.0.*wrapped in a list"),
        ({"space": {"kernel": "rbf"}}, TypeError, r"'kernel' needs to be a list or a numpy array, but got 'rbf'"),
        ({"space": {"C": Real(1, 10)}}, SearchSpaceError, "grid search cannot enumerate parameter 'C'.*strategy='random'"),
        ({"strategy": "random", "n_iter": 0}, InvalidParameterError, "n_iter must be an integer >= 1, got 0"),
        ({"strategy": "annealing"}, InvalidParameterError, "unknown strategy 'annealing'"),
        ({"workers": 0}, InvalidParameterError, "workers must be >= 1, got 0"),
        ({"workers": "four"}, InvalidParameterError, "workers must be a number of local workers"),
        ({"workers": []}, InvalidParameterError, "workers is an empty list"),
        ({"scoring": "acuracy"}, InvalidParameterError, "unknown scorer 'acuracy'.*'accuracy'"),
        ({"scoring": ["accuracy", "f1_macro"], "refit": True}, ValueError, "refit must be set to a scorer key"),
        ({"error_score": "ignore"}, InvalidParameterError, "error_score must be 'raise' or a number"),
        ({"y_len": 100}, InvalidParameterError, "same number of samples"),
    ],
)
def test_bad_input_is_refused_before_any_fit(iris, kwargs, error, match):
    X, y = iris
    y = y[: kwargs.pop("y_len")] if "y_len" in kwargs else y
    space = kwargs.pop("space", {"C": [1, 10]})
    with pytest.raises(error, match=match):
        run_search(CountingSVC(), space, X, y, cv=3, progress=False, **kwargs)
    assert CountingSVC.fits == 0


def test_hpsearch_errors_are_scikit_learns_types():
    from sklearn.exceptions import FitFailedWarning as SklearnFitFailedWarning
    from sklearn.utils._param_validation import InvalidParameterError as SklearnInvalidParameterError

    assert FitFailedWarning is SklearnFitFailedWarning
    assert issubclass(InvalidParameterError, SklearnInvalidParameterError)
    assert issubclass(InvalidParameterError, ValueError) and issubclass(InvalidParameterError, TypeError)


def test_empty_grid_runs_the_defaults_as_one_candidate(iris):
    X, y = iris
    result = run_search(CountingSVC(), {}, X, y, cv=3, progress=False)
    assert result.cv_results_["params"] == [{}]
    assert CountingSVC.fits == 3 + 1  # 3 folds, then the refit


def test_distribution_without_rvs_is_refused(iris):
    X, y = iris

    class NotADistribution:
        pass

    with pytest.raises(TypeError, match="'C' is not iterable or a distribution"):
        run_search(CountingSVC(), {"C": NotADistribution()}, X, y, strategy="random", progress=False)
    assert CountingSVC.fits == 0


def test_partial_fit_failure_gives_error_score_and_one_grouped_warning(iris):
    X, y = iris
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_search(
            FailingClassifier(), {"fail": [False, True]}, X, y, cv=3, error_score=-1.0, progress=False
        )
    fit_warnings = [w for w in caught if issubclass(w.category, FitFailedWarning)]
    assert len(fit_warnings) == 1
    message = str(fit_warnings[0].message)
    assert "3 fits failed out of a total of 6" in message and "this fit was asked to fail" in message
    scores = result.cv_results_["mean_test_score"]
    assert scores[1] == -1.0 and scores[0] > 0
    assert result.best_params_ == {"fail": False}
    assert len(result.fit_failures_) == 3 and "Traceback" in result.fit_failures_[0]


def test_nan_error_score_ranks_failures_last(iris):
    X, y = iris
    with pytest.warns(FitFailedWarning):
        result = run_search(FailingClassifier(), {"fail": [True, False]}, X, y, cv=3, progress=False)
    assert np.isnan(result.cv_results_["mean_test_score"][0])
    assert list(result.cv_results_["rank_test_score"]) == [2, 1]


def test_all_fits_failing_raises_with_the_first_traceback(iris):
    X, y = iris
    with pytest.raises(FitFailedError, match=r"All the 6 fits failed(.|\n)*Traceback(.|\n)*asked to fail"):
        run_search(FailingClassifier(fail=True), {"fail_on_n_samples": [1, 2]}, X, y, cv=3, progress=False)


def test_error_score_raise_raises_the_original_error(iris):
    X, y = iris
    with pytest.raises(ValueError, match="this fit was asked to fail"):
        run_search(
            FailingClassifier(), {"fail": [False, True]}, X, y, cv=3, error_score="raise", workers=2, progress=False
        )
