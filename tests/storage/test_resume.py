"""A master killed with SIGKILL mid-search, then the same call again: it resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hpsearch.storage import load_search

from . import searches

ROOT = Path(__file__).resolve().parents[2]


def comparable(cv_results):
    """Everything but timings (which differ between any two runs)."""
    return {k: v for k, v in cv_results.items() if not k.endswith("_time")}


def assert_same_results(got, want):
    got, want = comparable(got), comparable(want)
    assert sorted(got) == sorted(want)
    for key in want:
        if key == "params":
            assert got[key] == want[key]
        elif isinstance(want[key], np.ma.MaskedArray):
            assert list(got[key]) == list(want[key]), key
        else:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def committed(db):
    with sqlite3.connect(f"{Path(db).as_uri()}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def read_log(path):
    if not path.exists():
        return []
    return [tuple(line.split("|")) for line in path.read_text().splitlines()]


def task_keys(db, name="default"):
    """(x repr, n, train-fold id) of each committed result, as the estimator logs tasks."""
    stored = load_search(db, name)
    params = {c["id"]: c["params"] for c in stored.candidates}
    train_ids = {}
    splits = stored_splits()
    for fold, (train, _) in enumerate(splits):
        train_ids[fold] = str(int(searches.X[train, 0].sum()))
    return {(repr(float(params[t["candidate"]]["x"])) if isinstance(params[t["candidate"]]["x"], float)
             else repr(params[t["candidate"]]["x"]), str(params[t["candidate"]]["n"]), train_ids[t["fold"]])
            for t in stored.tasks}


def stored_splits():
    from sklearn.model_selection import KFold

    return list(KFold(searches.CV).split(searches.X))


def run_and_kill(db, log, strategy, kill_after, workers=2, delay=0.1):
    """Run the search in a master subprocess (``workers`` threads, each fit ``delay``
    seconds long) and SIGKILL it once ``kill_after`` fold results are committed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HPSEARCH_TEST_LOG=str(log), HPSEARCH_TEST_DELAY=str(delay))
    command = [sys.executable, "-m", "tests.storage.searches", str(db), strategy, "default", str(workers)]
    master = subprocess.Popen(command,
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert master.poll() is None, f"the master ended before it was killed:\n{master.stdout.read().decode()}"
            if db.exists():
                try:
                    if committed(db) >= kill_after:
                        break
                except sqlite3.OperationalError:  # tables not created yet
                    pass
            assert time.monotonic() < deadline, "the search made no progress in 120 s"
            time.sleep(0.005)
        master.send_signal(signal.SIGKILL)
        master.wait(30)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(30)
        master.stdout.close()
    assert master.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("strategy, kill_after", [("grid", 18), ("random", 15), ("bayes", 21)])
def test_sigkill_then_rerun_resumes(tmp_path, monkeypatch, strategy, kill_after):
    reference = searches.search(strategy, workers=2).cv_results_
    n_tasks = len(reference["params"]) * searches.CV

    db, log1, log2 = tmp_path / "search.db", tmp_path / "run1.log", tmp_path / "run2.log"
    run_and_kill(db, log1, strategy, kill_after)

    before = load_search(db)
    assert before.status == "interrupted"  # its process is gone
    done = task_keys(db)
    assert kill_after <= len(done) < n_tasks
    run1 = read_log(log1)
    started = {t[1:] for t in run1 if t[0] == "start"}
    ended = {t[1:] for t in run1 if t[0] == "end"}
    in_flight = started - ended
    assert done <= ended
    assert len(in_flight) <= 2  # two thread workers

    monkeypatch.setenv("HPSEARCH_TEST_LOG", str(log2))
    result = searches.search(strategy, workers=2, storage=db)
    run2 = [t[1:] for t in read_log(log2) if t[0] == "start"]
    assert len(run2) == len(set(run2)) == n_tasks - len(done)  # each remaining task once
    assert not set(run2) & done  # nothing committed ran again
    rerun = set(run2) & started
    assert rerun == started - done  # of what run 1 started, exactly the uncommitted tasks
    assert in_flight <= rerun
    assert_same_results(result.cv_results_, reference)

    after = load_search(db)
    assert after.status == "finished" and after.tasks_done == n_tasks and len(after.runs) == 2


@pytest.mark.slow
@pytest.mark.parametrize("strategy, kill_after, workers", [("halving", 55, 2), ("asha", 50, 1)])
def test_sigkill_then_rerun_resumes_an_adaptive_search(tmp_path, monkeypatch, strategy, kill_after, workers):
    """Synchronous halving killed in its second rung, Hyperband's ASHA brackets in the
    middle: the rerun replays the promotions and runs only what was not committed.

    ASHA's candidates depend on the order results arrive in (that is its point), so
    two undisturbed runs agree only when that order does: one worker, fits of a fixed
    length, for the reference and for both runs of the killed search.
    """
    delay = 0.1 if workers > 1 else 0.05
    monkeypatch.setenv("HPSEARCH_TEST_DELAY", str(delay))
    reference = searches.search(strategy, workers=workers)
    n_tasks = len(reference.cv_results_["params"]) * searches.CV

    db, log1, log2 = tmp_path / "search.db", tmp_path / "run1.log", tmp_path / "run2.log"
    run_and_kill(db, log1, strategy, kill_after, workers=workers, delay=delay)

    before = load_search(db)
    assert before.status == "interrupted"
    done = before.tasks_done
    assert kill_after <= done < n_tasks
    assert all(0 <= t["fold"] < searches.CV for t in before.tasks)  # stored by CV fold
    run1 = read_log(log1)
    started = [t[1:] for t in run1 if t[0] == "start"]
    ended = {t[1:] for t in run1 if t[0] == "end"}
    assert len(started) == len(set(started))  # a task is (params, training rows): each ran once
    in_flight = set(started) - ended
    assert len(in_flight) <= workers

    monkeypatch.setenv("HPSEARCH_TEST_LOG", str(log2))
    result = searches.search(strategy, workers=workers, storage=db)
    run2 = [t[1:] for t in read_log(log2) if t[0] == "start"]
    # Each remaining task ran once, and the results equal the reference's: so the tasks
    # run 2 did are exactly those without a stored result, and none with one ran again.
    assert len(run2) == len(set(run2)) == n_tasks - done
    assert_same_results(result.cv_results_, reference.cv_results_)
    # of what run 1 started, only the uncommitted tasks ran again, the in-flight ones among them
    assert len(set(run2) & set(started)) == len(started) - done
    assert in_flight <= set(run2)
    assert result.n_candidates_ == reference.n_candidates_

    after = load_search(db)
    assert after.status == "finished" and after.tasks_done == n_tasks and len(after.runs) == 2
