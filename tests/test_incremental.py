"""Incremental training: promoted candidates continue from their models (partial_fit,
warm_start), counted across threads and processes; a worker killed mid-search."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from scipy.stats import loguniform
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold

from hpsearch import HyperbandSearchCV, InvalidParameterError, ThreadWorkers, run_search
from tests.incremental_helpers import CountingSGD, count_lines

SPACE = {"alpha": loguniform(1e-5, 1e-1)}
HYPERBAND = dict(strategy="hyperband", resource="max_iter", max_resources=9, factor=3, cv=3,
                 random_state=0, refit=False, progress=False)


@pytest.fixture(scope="module")
def data():
    return make_classification(300, 8, random_state=0)


def budget(result, n_folds: int) -> int:
    """Training a configuration to its last rung costs that rung's resource, per fold."""
    return n_folds * sum(max(r["n_resources"] for r in records) for records in result.model_history_.values())


@pytest.mark.parametrize("asynchronous", [False, True])
def test_hyperband_partial_fit_calls_equal_its_budget(data, tmp_path, asynchronous):
    X, y = data
    counts = str(tmp_path / "calls")
    # threads, fixed: the count is exact only if no move to processes reruns a task
    result = run_search(CountingSGD(count_file=counts), SPACE, X, y, workers=ThreadWorkers(3), incremental=True,
                        asynchronous=asynchronous, **HYPERBAND)
    r = result.cv_results_
    assert result.n_brackets_ == 3 and not np.isnan(r["mean_test_score"]).any()
    # 17 configurations; synchronous brackets train them 69 calls per fold in all (ASHA
    # may promote a few more); every call is counted once: nothing is trained twice
    assert len(result.model_history_) == 17
    assert count_lines(counts, b"p\n") == budget(result, 3)
    assert budget(result, 3) == 3 * 69 if not asynchronous else budget(result, 3) >= 3 * 69
    assert count_lines(counts, b"f\n") == 0  # no fit from scratch
    # history_: one record per evaluation, in the order the scores arrived
    assert len(result.history_) == len(r["params"])
    assert {rec["model_id"] for rec in result.history_} == set(result.model_history_)
    for records in result.model_history_.values():
        assert [rec["iter"] for rec in records] == list(range(len(records)))
        assert all("max_iter" not in rec["params"] for rec in records)


def test_a_continued_model_scores_as_one_trained_from_scratch(data, tmp_path):
    # The same partial_fit calls in the same order: continuing is not an approximation.
    X, y = data
    result = run_search(CountingSGD(), SPACE, X, y, workers=2, incremental=True, **HYPERBAND)
    r = result.cv_results_
    splits = list(StratifiedKFold(3).split(X, y))
    for i in np.flatnonzero((r["n_resources"] == 9) & (r["iter"] > 0)):
        for fold, (train, test) in enumerate(splits):
            model = CountingSGD(**{k: v for k, v in r["params"][i].items() if k != "max_iter"})
            for _ in range(9):
                model.partial_fit(X[train], y[train], classes=[0, 1])
            assert r[f"split{fold}_test_score"][i] == model.score(X[test], y[test])


def test_warm_start_gives_the_same_forest_as_from_scratch(data):
    X, y = data
    kwargs = dict(strategy="halving", resource="n_estimators", max_resources=24, factor=2, cv=3,
                  random_state=0, workers=2, progress=False)
    space = {"max_depth": [2, 3, 4, None]}
    scratch = run_search(RandomForestClassifier(random_state=0), space, X, y, **kwargs)
    warm = run_search(RandomForestClassifier(random_state=0), space, X, y, incremental=True, **kwargs)
    for key in ("params", "iter", "n_resources", "mean_test_score"):
        np.testing.assert_array_equal(np.asarray(warm.cv_results_[key]), np.asarray(scratch.cv_results_[key]))
    assert warm.best_params_ == scratch.best_params_


@pytest.mark.slow
def test_a_worker_killed_mid_search_still_gives_a_complete_result(data, tmp_path):
    from hpsearch import LocalProcesses

    X, y = data
    threads = run_search(CountingSGD(), SPACE, X, y, workers=2, incremental=True, **HYPERBAND)
    counts, flag = str(tmp_path / "calls"), str(tmp_path / "killed")
    est = CountingSGD(count_file=counts, kill_after=60, kill_flag=flag, master_pid=os.getpid())
    with LocalProcesses(2) as pool:
        processes = run_search(est, SPACE, X, y, workers=pool, incremental=True, **HYPERBAND)
    assert os.path.exists(flag)  # a worker process did die mid-search
    r, t = processes.cv_results_, threads.cv_results_
    assert not processes.fit_failures_ and not np.isnan(r["mean_test_score"]).any()
    # every evaluation ran (in an order that depends on timing); its model, continued or
    # trained again, scores the same
    def scores(result):
        return {(rec["model_id"], rec["iter"]): rec["score"] for rec in result.history_}

    assert len(r["params"]) == len(t["params"]) and scores(processes) == scores(threads)
    # the lost process's models were trained again elsewhere: at least the budget
    assert count_lines(counts, b"p\n") >= budget(processes, 3)


def test_drop_in_hyperband_incremental_with_n_jobs(data, tmp_path):
    X, y = data
    counts = str(tmp_path / "calls")
    search = HyperbandSearchCV(CountingSGD(count_file=counts), SPACE, resource="max_iter", max_resources=9,
                               cv=3, random_state=0, incremental=True, n_jobs=2)
    assert clone(search).get_params()["n_jobs"] == 2 and search.workers is None
    search.fit(X, y)
    assert count_lines(counts, b"p\n") == 3 * 69 and count_lines(counts, b"f\n") == 1  # the refit
    assert search.best_estimator_.max_iter == 9 and len(search.model_history_) == 17


class NoPartialFit(CountingSGD):
    partial_fit = None  # type: ignore[assignment]

    def fit(self, X, y):
        raise AssertionError("fit was called")


@pytest.mark.parametrize("kwargs, match", [
    (dict(strategy="hyperband", resource="max_iter", max_resources=9),
     "NoPartialFit has no partial_fit method and no 'warm_start' parameter. Use an estimator with partial_fit"),
    (dict(strategy="halving"), "resource='n_samples' trains each step on a new subsample.*resource='max_iter'"),
    (dict(strategy="grid"), "only the adaptive strategies do; use strategy='hyperband'"),
    (dict(strategy="hyperband", resource="max_iter", max_resources=9, incremental="yes"),
     "incremental must be True or False"),
])
def test_an_incremental_search_that_cannot_continue_is_refused_before_any_fit(kwargs, match):
    X, y = make_classification(60, 4, random_state=0)
    kwargs = {"incremental": True, **kwargs}
    with pytest.raises(InvalidParameterError, match=match), warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning first
        run_search(NoPartialFit(), {"alpha": [1e-4, 1e-3]}, X, y, progress=False, **kwargs)


def test_drop_in_halving_incremental_keeps_scikit_learns_candidates(data):
    # A forest grown by warm start equals one fitted at once: synchronous halving keeps
    # scikit-learn's candidates and scores, and the history lists every step.
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV as SkHalving

    from hpsearch import HalvingGridSearchCV

    X, y = data
    kwargs = dict(resource="n_estimators", max_resources=24, factor=2, cv=3, random_state=0)
    space = {"max_depth": [2, 3, 4, None]}
    ours = HalvingGridSearchCV(RandomForestClassifier(random_state=0), space, incremental=True, n_jobs=2,
                               **kwargs).fit(X, y)
    theirs = SkHalving(RandomForestClassifier(random_state=0), space, **kwargs).fit(X, y)
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    np.testing.assert_array_equal(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"])
    assert ours.best_params_ == theirs.best_params_ and ours.n_resources_ == theirs.n_resources_
    assert len(ours.model_history_) == 4
    assert sum(len(v) for v in ours.model_history_.values()) == len(ours.history_) == len(ours.cv_results_["params"])
