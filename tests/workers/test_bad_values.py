"""A bad parameter value is a fit failure, wherever the task runs: the estimator's own
message is recorded and no worker is reported lost."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hpsearch import LocalProcesses, run_search
from hpsearch.errors import FitFailedWarning
from hpsearch.workers.base import TaskFailed, WorkerLost

from .helpers import CheckedEstimator, Recording

X = np.random.default_rng(5).normal(size=(30, 2))
SPACE = {"alpha": [1.0, -1.0, 2.0]}


def check_failures_recorded(result, caught) -> None:
    scores = result.cv_results_["mean_test_score"]
    assert np.isnan(scores[1]) and not np.isnan(scores[[0, 2]]).any()
    assert len(result.fit_failures_) == 3
    assert all("alpha must be >= 0, got -1.0" in text for text in result.fit_failures_)
    fit_warnings = [w for w in caught if issubclass(w.category, FitFailedWarning)]
    assert len(fit_warnings) == 1 and "alpha must be >= 0, got -1.0" in str(fit_warnings[0].message)
    assert not [w for w in caught if "lost" in str(w.message)]


def test_an_invalid_value_is_a_fit_failure_on_threads(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_search(CheckedEstimator(), SPACE, X, cv=3, workers=2, refit=False, progress=False)
    check_failures_recorded(result, caught)
    assert "lost" not in caplog.text and "could not run" not in caplog.text


def test_an_invalid_value_is_a_fit_failure_on_worker_processes(caplog):
    with LocalProcesses(1) as pool:
        recording = Recording(pool)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_search(CheckedEstimator(), SPACE, X, cv=3, workers=recording, refit=False,
                                progress=False)
        assert pool.stats["lost"] == 0
    check_failures_recorded(result, caught)
    assert not [e for e in recording.events if isinstance(e, (TaskFailed, WorkerLost))]
    assert len(recording.finished()) == 9
    assert "lost" not in caplog.text


def test_error_score_raise_raises_the_estimators_own_error():
    with pytest.raises(ValueError, match="alpha must be >= 0, got -1.0"):
        run_search(CheckedEstimator(), SPACE, X, cv=3, workers=1, error_score="raise", refit=False,
                   progress=False)
