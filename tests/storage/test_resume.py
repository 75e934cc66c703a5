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


@pytest.mark.slow
@pytest.mark.parametrize("strategy, kill_after", [("grid", 18), ("random", 15), ("bayes", 21)])
def test_sigkill_then_rerun_resumes(tmp_path, monkeypatch, strategy, kill_after):
    reference = searches.search(strategy, workers=2).cv_results_
    n_tasks = len(reference["params"]) * searches.CV

    db, log1, log2 = tmp_path / "search.db", tmp_path / "run1.log", tmp_path / "run2.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HPSEARCH_TEST_LOG=str(log1), HPSEARCH_TEST_DELAY="0.1")
    master = subprocess.Popen([sys.executable, "-m", "tests.storage.searches", str(db), strategy],
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
