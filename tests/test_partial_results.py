"""A search that ends early keeps what it computed: the exception's ``partial_result``."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from hpsearch import run_search

X = np.random.default_rng(5).normal(size=(60, 3))
SPACE = {"c": [float(c) for c in range(30)]}


class Interrupting(BaseEstimator):
    """The fit of candidate ``stop_c`` presses Ctrl-C (SIGINT to this process), once;
    that of ``fail_c`` raises."""

    interrupted = False

    def __init__(self, c: float = 0.0, stop_c: float | None = None, fail_c: float | None = None) -> None:
        self.c = c
        self.stop_c = stop_c
        self.fail_c = fail_c

    def fit(self, X, y=None):
        if self.c == self.fail_c:
            raise ValueError("this candidate cannot be fit")
        if self.c == self.stop_c and not type(self).interrupted:
            type(self).interrupted = True
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # the search cannot end before the interrupt lands
        return self

    def score(self, X, y=None):
        return float(-((self.c - 3.0) ** 2) + np.mean(X[:, 0]))


def check_partial(partial, reference, expect_at_least):
    completed = partial.cv_results_["params"]
    assert expect_at_least <= len(completed) < len(SPACE["c"])
    full = {p["c"]: i for i, p in enumerate(reference.cv_results_["params"])}
    rows = [full[p["c"]] for p in completed]
    for key in ("mean_test_score", "split0_test_score", "split2_test_score", "std_test_score"):
        np.testing.assert_array_equal(partial.cv_results_[key], reference.cv_results_[key][rows], err_msg=key)
    assert partial.best_params_ == completed[int(np.argmax(partial.cv_results_["mean_test_score"]))]
    assert not hasattr(partial, "best_estimator_")  # not refit


def test_ctrl_c_keeps_the_completed_candidates():
    reference = run_search(Interrupting(), SPACE, X, cv=3, workers=2, progress=False)
    Interrupting.interrupted = False
    with pytest.raises(KeyboardInterrupt) as info:
        run_search(Interrupting(stop_c=12.0), SPACE, X, cv=3, workers=2, progress=False)
    check_partial(info.value.partial_result, reference, expect_at_least=8)


def test_a_failed_fit_with_error_score_raise_keeps_the_completed_candidates():
    reference = run_search(Interrupting(), SPACE, X, cv=3, workers=1, progress=False)
    with pytest.raises(ValueError, match="cannot be fit") as info:  # the fit's own error, as in scikit-learn
        run_search(Interrupting(fail_c=20.0), SPACE, X, cv=3, workers=1, error_score="raise", progress=False)
    check_partial(info.value.partial_result, reference, expect_at_least=15)


def test_an_error_before_any_candidate_completed_has_no_partial_result():
    with pytest.raises(ValueError, match="cannot be fit") as info:
        run_search(Interrupting(fail_c=0.0), SPACE, X, cv=3, workers=1, error_score="raise", progress=False)
    assert not hasattr(info.value, "partial_result")


def test_ctrl_c_in_the_callers_thread_keeps_the_completed_candidates():
    """With n_jobs=None the fits run in the caller's thread, as in scikit-learn; Ctrl-C
    there ends the search and keeps what was completed."""
    from hpsearch import GridSearchCV

    reference = run_search(Interrupting(), SPACE, X, cv=3, workers=2, progress=False)
    Interrupting.interrupted = False
    search = GridSearchCV(Interrupting(stop_c=12.0), SPACE, cv=3)
    with pytest.raises(KeyboardInterrupt) as info:
        search.fit(X)
    partial = info.value.partial_result
    check_partial(partial, reference, expect_at_least=12)
    assert len(partial.cv_results_["params"]) == 12  # sequential: exactly those before c=12
    assert not hasattr(search, "cv_results_")


def test_a_refit_callable_that_raises_keeps_every_result():
    def broken_refit(cv_results):
        raise RuntimeError("the refit callable broke")

    reference = run_search(Interrupting(), SPACE, X, cv=3, workers=1, progress=False)
    with pytest.raises(RuntimeError, match="refit callable broke") as info:
        run_search(Interrupting(), SPACE, X, cv=3, workers=1, refit=broken_refit, progress=False)
    partial = info.value.partial_result
    assert partial.cv_results_["params"] == reference.cv_results_["params"]
    np.testing.assert_array_equal(partial.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])
    assert not hasattr(partial, "best_estimator_") and not hasattr(partial, "best_params_")  # not refit, no best


class FailsOnAllData(Interrupting):
    """Fits every fold, but not the refit on the whole data set."""

    def fit(self, X, y=None):
        if len(X) == 60:
            raise ValueError("the refit cannot be done")
        return super().fit(X, y)


def test_a_refit_that_raises_keeps_every_result_and_the_best():
    with pytest.raises(ValueError, match="refit cannot be done") as info:
        run_search(FailsOnAllData(), SPACE, X, cv=3, workers=1, progress=False)
    partial = info.value.partial_result
    assert len(partial.cv_results_["params"]) == len(SPACE["c"])
    assert partial.best_params_ == {"c": 3.0} and not hasattr(partial, "best_estimator_")
