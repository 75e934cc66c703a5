"""End to end: run_search(strategy="bayes") on real SVC fits, on any number of workers."""

from __future__ import annotations

import pytest
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from hpsearch import Real, run_search


@pytest.mark.slow
def test_bayes_svc_digits_reaches_097_with_the_same_candidates_on_1_2_4_workers():
    X, y = load_digits(return_X_y=True)
    space = {"C": Real(1e-2, 1e3, "log-uniform"), "gamma": Real(1e-5, 1e-1, "log-uniform")}
    runs = {
        workers: run_search(
            SVC(), space, X, y, strategy="bayes", n_iter=25, cv=5, workers=workers, random_state=0, progress=False
        )
        for workers in (2, 1, 4)
    }
    assert runs[2].best_score_ >= 0.97
    assert len(runs[2].cv_results_["params"]) == 25
    assert runs[1].cv_results_["params"] == runs[2].cv_results_["params"] == runs[4].cv_results_["params"]
