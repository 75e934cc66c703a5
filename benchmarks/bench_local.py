"""hpsearch on one machine against scikit-learn's own parallelism, same searches, same run.

Five searches, each run by every contender with 2 workers:

- ``svc``: SVC on digits over a 4 x 3 grid, cv=5 (60 fits; BLAS releases the GIL);
- ``knn``: a pure-Python k-nearest-neighbours classifier, 40 fits (holds the GIL);
- ``logreg``: LogisticRegression on iris, 100 values of C, cv=5 (500 small fits);
- ``cheap``: 1,000 candidates of a tree of depth 1 on iris, cv=3 (3,000 tiny fits);
- ``svc-big``: SVC on all of digits, 3 x 2 grid, cv=3 (fewer, longer fits).

Contenders: hpsearch ``run_search(workers=2)`` (the default: threads, moved to warm
local processes when the fits hold the GIL; which one ran each search is shown; a later
search of an estimator and data shape whose fits held the GIL starts on the warm
processes at once, as hpsearch keeps each probe's verdict for the process),
``GridSearchCV(n_jobs=2)`` with joblib's loky processes and with joblib's threads, and
dask-ml's ``GridSearchCV`` on dask's threaded scheduler (``iid=False``: the plain mean
over folds, as scikit-learn). Runs alternate between contenders (the order rotates each
round) so machine noise hits all alike. The first search of the process is *included*
in the timings (that is what a user's first search costs: hpsearch's and loky's process
start-up) and also shown on its own. The scores of every contender are checked equal to
``GridSearchCV``'s, to the bit.

    python benchmarks/bench_local.py [--repeat 5] [--workers 2] [--cases svc,knn,...]

A ratio below 1.0 means hpsearch is faster than loky (the target is <= 0.8). Each case
also shows a lower bound: the fit and score seconds of loky's tasks (each in its own
process, so no GIL in the way) summed and divided by the workers: no contender running
those fits can finish sooner, and the gap to it is dispatch, start-up and the tail.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any, Callable

import numpy as np
from joblib import parallel_backend
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from hpsearch import run_search


class PurePythonKNN(ClassifierMixin, BaseEstimator):
    """k nearest neighbours in plain Python loops: its fits and scores hold the GIL."""

    def __init__(self, n_neighbors: int = 3, p: int = 2) -> None:
        self.n_neighbors = n_neighbors
        self.p = p

    def fit(self, X, y):
        self.X_ = [list(map(float, row)) for row in X]
        self.y_ = list(y)
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        out = []
        p = self.p
        for row in X:
            dists = []
            for train, label in zip(self.X_, self.y_):
                d = 0.0
                for a, b in zip(row, train):
                    d += abs(a - b) ** p
                dists.append((d, label))
            dists.sort(key=lambda t: t[0])
            votes: dict[Any, int] = {}
            for _, label in dists[: self.n_neighbors]:
                votes[label] = votes.get(label, 0) + 1
            out.append(max(sorted(votes), key=votes.__getitem__))
        return np.asarray(out)


def cases() -> dict[str, tuple[Any, dict[str, list[Any]], Any, Any, int]]:
    Xd, yd = load_digits(return_X_y=True)
    Xi, yi = load_iris(return_X_y=True)
    rng = np.random.RandomState(0)
    small = rng.choice(len(Xd), 200, replace=False)
    return {
        "svc": (SVC(), {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}, Xd, yd, 5),
        "knn": (PurePythonKNN(), {"n_neighbors": [1, 3, 5, 7], "p": [1, 2]}, Xd[small, :32], yd[small], 5),
        "logreg": (LogisticRegression(max_iter=1000), {"C": list(np.logspace(-3, 3, 100))}, Xi, yi, 5),
        "cheap": (DecisionTreeClassifier(max_depth=1), {"random_state": list(range(1000))}, Xi, yi, 3),
        "svc-big": (SVC(), {"C": [1, 10, 100], "gamma": [1e-3, 1e-4]}, Xd, yd, 3),
    }


class _Moves(logging.Handler):
    """Counts the searches hpsearch's default moved to processes (its INFO line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.moves = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("moving the search"):
            self.moves += 1


MOVES = _Moves()


def contenders(workers: int) -> dict[str, Callable[..., Any]]:
    def hpsearch_default(est, grid, X, y, cv):
        return run_search(est, grid, X, y, cv=cv, workers=workers, progress=False).cv_results_

    def sk_loky(est, grid, X, y, cv):
        return GridSearchCV(est, grid, cv=cv, n_jobs=workers).fit(X, y).cv_results_

    def sk_threads(est, grid, X, y, cv):
        with parallel_backend("threading", n_jobs=workers):
            return GridSearchCV(est, grid, cv=cv, n_jobs=workers).fit(X, y).cv_results_

    found: dict[str, Callable[..., Any]] = {
        f"hpsearch workers={workers}": hpsearch_default,
        f"GridSearchCV(n_jobs={workers}) loky": sk_loky,
        f"GridSearchCV(n_jobs={workers}) threading": sk_threads,
    }
    try:
        import dask_ml.model_selection as dms
    except ImportError:
        logging.warning("dask-ml is not installed: its GridSearchCV is left out")
    else:
        def dask_threads(est, grid, X, y, cv):
            return dms.GridSearchCV(est, grid, cv=cv, iid=False, scheduler="threads", n_jobs=workers).fit(X, y).cv_results_

        found["dask-ml GridSearchCV threads"] = dask_threads
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cases", default="svc,knn,logreg,cheap,svc-big")
    args = parser.parse_args()
    auto_log = logging.getLogger("hpsearch.workers.auto")
    auto_log.setLevel(logging.INFO)
    auto_log.addHandler(MOVES)
    auto_log.propagate = False
    all_cases = cases()
    runners = contenders(args.workers)
    names = list(runners)
    summary = []
    for case in args.cases.split(","):
        est, grid, X, y, cv = all_cases[case]
        times: dict[str, list[float]] = {name: [] for name in names}
        work: list[float] = []  # loky's fit + score seconds of every task, summed, per search
        chosen: list[str] = []
        reference = None
        for round_ in range(args.repeat):
            order = names[round_ % len(names):] + names[: round_ % len(names)]
            for name in order:
                moves = MOVES.moves
                start = time.perf_counter()
                results = runners[name](est, grid, X, y, cv)
                times[name].append(time.perf_counter() - start)
                if name == names[0]:
                    chosen.append("processes" if MOVES.moves > moves else "threads")
                if name == names[1]:
                    work.append(cv * float(np.sum(results["mean_fit_time"]) + np.sum(results["mean_score_time"])))
                scores = np.asarray(results["mean_test_score"], dtype=float)
                if reference is None:
                    reference = scores
                elif not np.array_equal(scores, reference):
                    raise SystemExit(f"{case}: {name} gave different scores:\n{scores}\n{reference}")
        loky = statistics.median(times[names[1]])
        print(f"{case}: {cv}-fold, {len(reference)} candidates, median of {args.repeat} "
              f"(first search of the process included); scores equal everywhere")
        for name in names:
            med = statistics.median(times[name])
            print(f"  {name:38s} {med:7.2f} s  ratio to loky {med / loky:5.2f}  "
                  f"first {times[name][0]:6.2f} s  all {[round(t, 2) for t in times[name]]}")
        print(f"  hpsearch's default ran on: {', '.join(chosen)}")
        bound = statistics.median(work) / args.workers
        print(f"  lower bound: loky's fit + score seconds / {args.workers} workers = {bound:.2f} s "
              f"(ratio to loky {bound / loky:.2f}; the rest is hand-off, start-up and the tail)")
        summary.append((case, statistics.median(times[names[0]]) / loky))
    print("hpsearch default / loky:", ", ".join(f"{c} {r:.2f}" for c, r in summary), "(target <= 0.8)")


if __name__ == "__main__":
    main()
