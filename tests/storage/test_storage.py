"""Storage files: several searches, refusals before any fit, clear errors for bad files."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from hpsearch import InvalidParameterError
from hpsearch.storage import StorageError, list_searches, load_search

from . import searches


@pytest.fixture
def fit_log(tmp_path, monkeypatch):
    """The file every fit of searches.Quadratic logs to: no file, no fit."""
    path = tmp_path / "fits.log"
    monkeypatch.setenv("HPSEARCH_TEST_LOG", str(path))
    return path


def n_fits(path):
    return sum(1 for line in path.read_text().splitlines() if line.startswith("start")) if path.exists() else 0


def test_several_searches_in_one_file_and_a_rerun_fits_nothing(tmp_path, fit_log):
    db = tmp_path / "search.db"
    grid = searches.search("grid", storage=db, name="grid")
    rand = searches.search("random", storage=db, name="random")
    fits = n_fits(fit_log)
    assert fits == (len(grid.cv_results_["params"]) + len(rand.cv_results_["params"])) * searches.CV
    again = searches.search("random", storage=db, name="random")  # finished: resumed with nothing to do
    assert n_fits(fit_log) == fits
    assert again.cv_results_["params"] == rand.cv_results_["params"]
    assert list(again.cv_results_["mean_test_score"]) == list(rand.cv_results_["mean_test_score"])
    stored = {s.name: s for s in list_searches(db)}
    assert sorted(stored) == ["grid", "random"]
    assert stored["grid"].status == "finished"
    assert stored["grid"].candidates_done == len(grid.cv_results_["params"])
    assert stored["random"].best["score"] == rand.best_score_
    assert stored["random"].best["params"] == rand.best_params_
    assert len(stored["random"].runs) == 2


def test_a_changed_space_under_the_same_name_is_refused_before_any_fit(tmp_path, fit_log):
    db = tmp_path / "search.db"
    searches.search("grid", storage=db, name="s")
    fits = n_fits(fit_log)
    space = dict(searches.SPACES["grid"], x=[0.0, 0.5])
    with pytest.raises(StorageError) as info:
        searches.run_search(searches.Quadratic(), space, searches.X, searches.Y, cv=searches.CV,
                            refit=False, storage=db, name="s")
    message = str(info.value)
    assert "space: stored" in message and "'x': Categorical([0.0, 0.5])" in message
    assert "another name" in message and "['s']" in message
    assert "estimator" not in message  # only what differs is listed
    assert n_fits(fit_log) == fits
    assert isinstance(info.value, ValueError)
    # under another name it is a new search in the same file
    searches.run_search(searches.Quadratic(), space, searches.X, searches.Y, cv=searches.CV,
                        refit=False, storage=db, name="s2")
    assert [s.name for s in list_searches(db)] == ["s", "s2"]


def test_a_changed_seed_or_data_is_refused(tmp_path, fit_log):
    db = tmp_path / "search.db"
    searches.search("random", storage=db)
    with pytest.raises(StorageError, match="random_state: stored 0, now 1"):
        searches.run_search(searches.Quadratic(), searches.SPACES["random"], searches.X, searches.Y,
                            strategy="random", n_iter=searches.N_ITER, cv=searches.CV, random_state=1,
                            refit=False, storage=db)
    with pytest.raises(StorageError, match="data: stored digest"):
        searches.run_search(searches.Quadratic(), searches.SPACES["random"], searches.X, searches.Y + 1,
                            strategy="random", n_iter=searches.N_ITER, cv=searches.CV, random_state=0,
                            refit=False, storage=db)


def test_random_state_none_stores_a_seed_that_the_rerun_reuses(tmp_path, fit_log):
    db = tmp_path / "search.db"
    kwargs = dict(strategy="random", n_iter=4, cv=searches.CV, refit=False, storage=db, progress=False)
    first = searches.run_search(searches.Quadratic(), searches.SPACES["random"], searches.X, searches.Y, **kwargs)
    fits = n_fits(fit_log)
    again = searches.run_search(searches.Quadratic(), searches.SPACES["random"], searches.X, searches.Y, **kwargs)
    assert again.cv_results_["params"] == first.cv_results_["params"]
    assert n_fits(fit_log) == fits


def test_a_corrupt_file_is_refused_before_any_fit(tmp_path, fit_log):
    db = tmp_path / "search.db"
    db.write_bytes(b"this is not an SQLite database, " * 100)
    with pytest.raises(StorageError, match="not a readable SQLite database.*corrupt"):
        searches.search("grid", storage=db)
    assert n_fits(fit_log) == 0


def test_another_programs_database_is_refused(tmp_path, fit_log):
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE trials (id INTEGER)")
    conn.close()
    with pytest.raises(StorageError, match=r"another program \(tables \['trials'\]\)"):
        searches.search("grid", storage=db)
    assert n_fits(fit_log) == 0


def test_a_directory_as_storage_path_is_refused_before_any_fit(tmp_path, fit_log):
    with pytest.raises(StorageError, match="is a directory; give the path of a file inside it"):
        searches.search("grid", storage=tmp_path)
    with pytest.raises(StorageError, match="directory .* does not exist"):
        searches.search("grid", storage=tmp_path / "missing" / "search.db")
    with pytest.raises(StorageError, match="must be the path of an SQLite file"):
        searches.search("grid", storage=42)
    with pytest.raises(StorageError, match="name must be a non-empty string"):
        searches.search("grid", storage=tmp_path / "s.db", name="")
    assert n_fits(fit_log) == 0


@pytest.fixture
def read_only_dir(tmp_path):
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: make the directory immutable
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and the directory cannot be made immutable (chattr +i)")
        yield path
        subprocess.run([chattr, "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


def test_a_read_only_directory_is_refused_before_any_fit(read_only_dir, fit_log):
    with pytest.raises(StorageError, match="its directory is read-only.*writable directory"):
        searches.search("grid", storage=read_only_dir / "search.db")
    assert n_fits(fit_log) == 0
    assert not os.listdir(read_only_dir)


def test_reading_errors(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        load_search(tmp_path / "none.db")
    db = tmp_path / "search.db"
    searches.search("grid", storage=db, name="a")
    searches.search("random", storage=db, name="b")
    with pytest.raises(StorageError, match=r"holds 2 searches \['a', 'b'\]; pass name="):
        load_search(db)
    with pytest.raises(StorageError, match="no search named 'c'"):
        load_search(db, "c")
    assert load_search(db, "b").name == "b"


def test_bad_input_still_comes_first(tmp_path):
    # scikit-learn's own checks of a grid (an empty list of values) run before the file is made
    with pytest.raises(ValueError, match="empty"):
        searches.run_search(searches.Quadratic(), {"n": []}, searches.X, searches.Y, storage=tmp_path / "s.db")
    assert not (tmp_path / "s.db").exists()


def test_asha_idle_promotions_are_stored_and_replayed(tmp_path, fit_log, monkeypatch):
    """ASHA's asks for idle slots are ops of their own ('ask_idle'): a rerun of the
    finished search replays them and fits nothing."""
    import sqlite3

    from hpsearch import ThreadWorkers, run_search

    monkeypatch.setenv("HPSEARCH_TEST_DELAY", "0.01")
    db = tmp_path / "search.db"

    def asha():
        return run_search(searches.Quadratic(), searches.SPACES["grid"], searches.X, searches.Y,
                          strategy="halving", asynchronous=True, factor=2, cv=searches.CV, random_state=0,
                          refit=False, progress=False, workers=ThreadWorkers(4), storage=db)

    first = asha()
    fits = n_fits(fit_log)
    with sqlite3.connect(db) as conn:
        kinds = {kind for (kind,) in conn.execute("SELECT kind FROM ops")}
    # the last configurations climb with 3 folds on 4 slots: a slot is offered at least once
    assert "ask_idle" in kinds
    idle = first.cv_results_["idle_promotion"]
    again = asha()
    assert n_fits(fit_log) == fits
    assert again.cv_results_["params"] == first.cv_results_["params"]
    assert list(again.cv_results_["idle_promotion"]) == list(idle)
    assert list(again.cv_results_["mean_test_score"]) == list(first.cv_results_["mean_test_score"])
