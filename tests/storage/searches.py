"""The searches the storage tests run, in this process or in a master subprocess.

``python -m tests.storage.searches DB STRATEGY [NAME [WORKERS]]`` runs one with
``storage=DB`` and two thread workers (or WORKERS). The estimator logs ``start``/``end`` of each fit to
``$HPSEARCH_TEST_LOG`` and sleeps ``$HPSEARCH_TEST_DELAY`` seconds in between, so a
test can count the fits each run makes, and kill the master while fits run.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from hpsearch import FitFailedWarning, Integer, Real, run_search

N_SAMPLES = 60
X = np.column_stack([np.arange(N_SAMPLES, dtype=float), np.linspace(-1.0, 1.0, N_SAMPLES)])
Y = np.sin(3 * X[:, 1])

SPACES = {
    "grid": {"x": [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0], "n": [1, 2]},
    "random": {"x": Real(0.0, 1.0), "n": [1, 2, 3]},
    "bayes": {"x": Real(0.0, 1.0), "n": Integer(1, 3)},
}
N_ITER = 12
CV = 3


class Quadratic(RegressorMixin, BaseEstimator):
    """A fit whose score depends on its params and fold only (exactly reproducible)."""

    def __init__(self, x: float = 0.0, n: int = 1) -> None:
        self.x = x
        self.n = n

    def _log(self, what: str, X: np.ndarray) -> None:
        path = os.environ.get("HPSEARCH_TEST_LOG")
        if path:
            line = f"{what}|{self.x!r}|{self.n}|{int(X[:, 0].sum())}\n"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Quadratic:
        self._log("start", X)
        time.sleep(float(os.environ.get("HPSEARCH_TEST_DELAY", "0")))
        self.offset_ = float(X[:, 0].mean()) / 1000
        self._log("end", X)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), -((self.x - 0.3) ** 2) - 0.01 * self.n + self.offset_)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X)) - 0.001 * X[:, 0].mean())


GATE = threading.Event()  # fits of the last grid candidate wait on it: the search stays running


class Gated(Quadratic):
    """Fails for x == 0.9; the last grid candidate (n=2, x=1.0) waits for GATE."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Quadratic:
        if self.x == 0.9:
            raise ValueError(f"boom: x={self.x} cannot be fitted")
        if self.x == 1.0 and self.n == 2 and not GATE.wait(120):
            raise TimeoutError("the test never opened the gate")
        return super().fit(X, y)


def start_gated_search(db, name: str) -> tuple[threading.Thread, list[BaseException]]:
    """A grid search of Gated on a thread, returned once all but its last candidate are
    committed: 15 of 16 candidates done (2 failed), 45 of 48 fits. ``GATE.set()`` ends it."""
    GATE.clear()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FitFailedWarning)
                run_search(Gated(), SPACES["grid"], X, Y, cv=CV, refit=False, progress=False,
                           storage=db, name=name, workers=2)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while True:
        try:
            with sqlite3.connect(f"{Path(db).as_uri()}?mode=ro", uri=True) as conn:
                if conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] >= 45:
                    return thread, errors
        except sqlite3.Error:  # not created yet
            pass
        if errors or time.monotonic() > deadline:
            GATE.set()
            thread.join(60)
            raise AssertionError(f"the gated search did not get to its last candidate: {errors}")
        time.sleep(0.05)


#: Adaptive searches: synchronous halving over the grid (16 candidates, 5 rungs of
#: subsampled folds), and Hyperband run as ASHA (asynchronous brackets).
ADAPTIVE = {
    "halving": dict(space=SPACES["grid"], strategy="halving", factor=2),
    "asha": dict(space=SPACES["random"], strategy="hyperband", asynchronous=True, n_iter=N_ITER,
                 min_resources=6, factor=2),
}


def grid_search_cv(**kwargs):
    """The grid search as a ``GridSearchCV`` (``storage=`` and ``name=`` in ``kwargs``)."""
    from hpsearch import GridSearchCV

    return GridSearchCV(Quadratic(), SPACES["grid"], cv=CV, refit=False, **kwargs)


def search(strategy: str, **kwargs):
    if strategy == "grid_search_cv":  # the class, fitted: its fitted attributes as a result's
        return grid_search_cv(**kwargs).fit(X, Y)
    if strategy in ADAPTIVE:
        options = dict(ADAPTIVE[strategy])
        space = options.pop("space")
        return run_search(Quadratic(), space, X, Y, cv=CV, random_state=0, refit=False, progress=False,
                          **options, **kwargs)
    return run_search(Quadratic(), SPACES[strategy], X, Y, strategy=strategy, n_iter=N_ITER, cv=CV,
                      random_state=0, refit=False, progress=False, **kwargs)


if __name__ == "__main__":
    db, strategy = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else None
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    from tests.storage import searches  # this module by its name, not as __main__, like the tests

    searches.search(strategy, storage=db, name=name, workers=workers)
