"""``storage=`` and ``name=`` on the search classes: resume, refusals, seeds, clones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone

from hpsearch import (
    BayesSearchCV, GridSearchCV, HalvingGridSearchCV, HyperbandSearchCV, InvalidParameterError, Integer,
    RandomizedSearchCV, Real, run_search,
)
from hpsearch.storage import StorageError, list_searches, load_search, stored_seed

from . import searches
from .test_resume import assert_same_results, read_log, run_and_kill
from .test_storage import n_fits


@pytest.fixture
def fit_log(tmp_path, monkeypatch):
    path = tmp_path / "fits.log"
    monkeypatch.setenv("HPSEARCH_TEST_LOG", str(path))
    return path


N_GRID_TASKS = 16 * searches.CV


def test_a_second_instance_with_the_same_storage_resumes(tmp_path, fit_log):
    db = tmp_path / "search.db"
    first = searches.grid_search_cv(storage=db, name="grid", workers=2).fit(searches.X, searches.Y)
    assert n_fits(fit_log) == N_GRID_TASKS
    again = searches.grid_search_cv(storage=db, name="grid", workers=2).fit(searches.X, searches.Y)
    assert n_fits(fit_log) == N_GRID_TASKS  # every fit was stored: none ran again
    assert_same_results(again.cv_results_, first.cv_results_)
    # run_search builds the same GridSearchCV: it resumes the class's search too
    result = run_search(searches.Quadratic(), searches.SPACES["grid"], searches.X, searches.Y, cv=searches.CV,
                        refit=False, progress=False, storage=db, name="grid")
    assert n_fits(fit_log) == N_GRID_TASKS
    assert_same_results(result.cv_results_, first.cv_results_)
    assert len(load_search(db, "grid").runs) == 3


def test_a_killed_class_search_resumes_in_a_new_instance(tmp_path, monkeypatch):
    reference = searches.grid_search_cv(workers=2).fit(searches.X, searches.Y).cv_results_
    db, log1, log2 = tmp_path / "search.db", tmp_path / "run1.log", tmp_path / "run2.log"
    run_and_kill(db, log1, "grid_search_cv", kill_after=18)
    done = load_search(db).tasks_done
    assert 18 <= done < N_GRID_TASKS
    run1 = read_log(log1)
    in_flight = {t[1:] for t in run1 if t[0] == "start"} - {t[1:] for t in run1 if t[0] == "end"}

    monkeypatch.setenv("HPSEARCH_TEST_LOG", str(log2))
    search = searches.grid_search_cv(storage=db, workers=2).fit(searches.X, searches.Y)
    run2 = [t[1:] for t in read_log(log2) if t[0] == "start"]
    assert len(run2) == len(set(run2)) == N_GRID_TASKS - done
    assert in_flight <= set(run2)
    assert_same_results(search.cv_results_, reference)


def test_a_changed_grid_under_the_same_name_is_refused_before_any_fit(tmp_path, fit_log):
    db = tmp_path / "search.db"
    searches.grid_search_cv(storage=db, name="g").fit(searches.X, searches.Y)
    fits = n_fits(fit_log)
    changed = GridSearchCV(searches.Quadratic(), dict(searches.SPACES["grid"], n=[1, 3]), cv=searches.CV,
                           refit=False, storage=db, name="g")
    with pytest.raises(StorageError, match=r"(?s)space: stored .*another name") as info:
        changed.fit(searches.X, searches.Y)
    assert "estimator" not in str(info.value)
    assert n_fits(fit_log) == fits
    assert not hasattr(changed, "cv_results_")
    changed.set_params(name="g2").fit(searches.X, searches.Y)  # another name: a new search
    assert [s.name for s in list_searches(db)] == ["g", "g2"]


def test_bad_storage_is_refused_before_any_fit(tmp_path, fit_log):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database " * 100)
    for storage, message in [(tmp_path, "is a directory"), (corrupt, "not a readable SQLite database"),
                             (42, "must be the path of an SQLite file")]:
        with pytest.raises(StorageError, match=message):
            searches.grid_search_cv(storage=storage).fit(searches.X, searches.Y)
    with pytest.raises(StorageError, match="name must be a non-empty string"):
        searches.grid_search_cv(storage=tmp_path / "s.db", name="").fit(searches.X, searches.Y)
    with pytest.raises(InvalidParameterError, match="needs storage="):
        searches.grid_search_cv(name="lost").fit(searches.X, searches.Y)
    with pytest.raises(ValueError, match="'name' parameter of GridSearchCV must be"):  # scikit-learn's check
        searches.grid_search_cv(storage=tmp_path / "s.db", name=3).fit(searches.X, searches.Y)
    assert n_fits(fit_log) == 0
    assert not (tmp_path / "s.db").exists()


def test_random_state_none_stores_a_seed_and_leaves_the_parameter_alone(tmp_path, fit_log):
    db = tmp_path / "search.db"

    def make():
        return RandomizedSearchCV(searches.Quadratic(), searches.SPACES["random"], n_iter=5, cv=searches.CV,
                                  refit=False, storage=db, workers=2)

    first = make().fit(searches.X, searches.Y)
    assert first.random_state is None and first.get_params()["random_state"] is None
    fits = n_fits(fit_log)
    again = make().fit(searches.X, searches.Y)
    assert n_fits(fit_log) == fits
    assert again.cv_results_["params"] == first.cv_results_["params"]
    assert stored_seed(db, None) is not None
    # without storage, random_state=None draws new candidates each fit, as in scikit-learn
    free = make().set_params(storage=None).fit(searches.X, searches.Y)
    assert free.cv_results_["params"] != first.cv_results_["params"]


def test_params_clone_and_set_params(tmp_path):
    db = tmp_path / "search.db"
    search = searches.grid_search_cv(storage=db, name="g")
    assert search.get_params()["storage"] == db and search.get_params()["name"] == "g"
    copy = clone(search)
    assert copy.storage == db and copy.name == "g"
    assert copy.set_params(name="h").name == "h" and search.name == "g"
    for cls in (GridSearchCV, RandomizedSearchCV, BayesSearchCV, HalvingGridSearchCV, HyperbandSearchCV):
        params = cls.__init__.__code__.co_varnames
        assert "storage" in params and "name" in params, cls


def test_halving_and_hyperband_classes_resume_a_finished_search(tmp_path, fit_log):
    db = tmp_path / "search.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        halving = HalvingGridSearchCV(searches.Quadratic(), searches.SPACES["grid"], factor=2, cv=searches.CV,
                                      refit=False, storage=db, name="halving", workers=2)
        first = halving.fit(searches.X, searches.Y)
        n_candidates, results = list(first.n_candidates_), dict(first.cv_results_)
        assert halving.random_state is None  # a seed was drawn and stored, not set
        hyperband = HyperbandSearchCV(searches.Quadratic(), searches.SPACES["random"], min_resources=12,
                                      factor=2, cv=searches.CV, refit=False, random_state=0, storage=db,
                                      name="hyperband", workers=2).fit(searches.X, searches.Y)
        fits = n_fits(fit_log)
        again = clone(halving).fit(searches.X, searches.Y)
        hyperband_again = clone(hyperband).fit(searches.X, searches.Y)
    assert n_fits(fit_log) == fits
    assert again.n_candidates_ == n_candidates
    assert_same_results(again.cv_results_, results)
    assert_same_results(hyperband_again.cv_results_, hyperband.cv_results_)


def test_bayes_with_several_sub_spaces_records_each_part(tmp_path, fit_log):
    db = tmp_path / "search.db"

    def make():
        spaces = [({"x": Real(0.0, 1.0)}, 3), {"x": Real(0.0, 1.0), "n": Integer(1, 3)}]
        return BayesSearchCV(searches.Quadratic(), spaces, n_iter=4, cv=searches.CV, refit=False,
                             random_state=0, optimizer_kwargs={"n_initial_points": 2}, storage=db)

    first = make().fit(searches.X, searches.Y)
    assert len(first.cv_results_["params"]) == 7
    fits = n_fits(fit_log)
    again = make().fit(searches.X, searches.Y)
    assert n_fits(fit_log) == fits
    np.testing.assert_array_equal(again.cv_results_["mean_test_score"], first.cv_results_["mean_test_score"])
    assert [s.name for s in list_searches(db)] == ["default", "default (part 2)"]
    with pytest.raises(StorageError, match="optimizer_kwargs"):  # a setting that changes the candidates
        make().set_params(optimizer_kwargs={"n_initial_points": 3}).fit(searches.X, searches.Y)
