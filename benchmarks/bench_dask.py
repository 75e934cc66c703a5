"""hpsearch's DaskWorkers against dask-ml's GridSearchCV on the same LocalCluster, same run.

Two measurements, each alternating the contenders and comparing medians:

1. The same grid search through ``dask_ml.model_selection.GridSearchCV`` and through
   ``run_search(workers=DaskWorkers)``: an SVC on digits (a 4 x 3 grid, 5-fold CV: 60 fits
   of a fraction of a second, so the fits dominate), and a decision tree on digits (a
   10 x 4 grid, 5-fold CV: 200 fits of a few milliseconds, so the cost of running a task
   shows). Target: hpsearch takes at most 0.8x dask-ml's time.
2. Per-task overhead: ``--tasks`` no-op tasks (a dummy estimator whose fit does
   nothing) through ``DaskWorkers``, against ``client.map`` of the same number of no-op
   calls gathered by ``client.gather``. Target: hpsearch's time per task is lower.

    python benchmarks/bench_dask.py [--repeat 5] [--workers 2] [--tasks 400]

A ratio below 1.0 means hpsearch is faster. "above fits/workers" is a run's time minus
the time its fits and scorings took (from ``cv_results_``) divided by the workers: what
the engine added, start, refit and idle workers included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
from distributed import Client, LocalCluster
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from hpsearch import DaskWorkers, run_search

GRID = {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}
TREE_GRID = {"max_depth": list(range(2, 12)), "min_samples_leaf": [1, 2, 4, 8]}


class NoOp(BaseEstimator):
    """Fits and scores in no time: what remains is the cost of running a task."""

    def __init__(self, i: int = 0) -> None:
        self.i = i

    def fit(self, X: Any, y: Any = None) -> NoOp:
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return 0.0


def noop(i: int) -> int:
    return i


def timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def busy(search: Any, n_splits: int = 5) -> float:
    """Seconds the workers spent fitting and scoring (from the search's cv_results_)."""
    results = search.cv_results_
    return float(np.sum(results["mean_fit_time"] + results["mean_score_time"]) * n_splits)


def compare(name_a: str, a, name_b: str, b, repeat: int, workers: int | None = None) -> tuple[float, float]:
    """Median times of ``a`` and ``b``, alternating; with ``workers``, also how far each
    run was above its fits' own time spread over the workers (the overhead)."""
    times: dict[str, list[float]] = {name_a: [], name_b: []}
    above: dict[str, list[float]] = {name_a: [], name_b: []}
    for _ in range(repeat):  # interleaved, so machine noise hits both alike
        for name, fn in ((name_a, a), (name_b, b)):
            elapsed, out = timed(fn)
            times[name].append(elapsed)
            if workers:
                above[name].append(elapsed - busy(out) / workers)
    for name in (name_a, name_b):
        line = f"  {name:<44} {statistics.median(times[name]):7.3f} s   {sorted(round(t, 3) for t in times[name])}"
        if workers:
            line += f"   above fits/workers: {statistics.median(above[name]):.3f} s"
        print(line)
    return statistics.median(times[name_a]), statistics.median(times[name_b])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes, one thread each")
    parser.add_argument("--tasks", type=int, default=400, help="no-op tasks in the overhead measurement")
    args = parser.parse_args()
    from dask_ml.model_selection import GridSearchCV

    X, y = load_digits(return_X_y=True)
    print("load average at start: %.2f %.2f %.2f" % os.getloadavg())
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client, \
            DaskWorkers(client) as pool:

        searches = [
            ("SVC on digits, 4x3 grid, cv=5 (60 fits)", SVC(), GRID),
            ("DecisionTree on digits, 10x4 grid, cv=5 (200 fits)", DecisionTreeClassifier(random_state=0),
             TREE_GRID),
        ]
        for title, estimator, grid in searches:

            def ours(estimator=estimator, grid=grid):
                return run_search(estimator, grid, X, y, cv=5, workers=pool, progress=False)

            def theirs(estimator=estimator, grid=grid):
                # dask-ml's default refit=True; hpsearch refits too.
                return GridSearchCV(estimator, grid, cv=5, scheduler=client).fit(X, y)

            a, b = ours(), theirs()  # warm-up, and a correctness check: the same fold scores
            # (dask-ml weights its mean_test_score by test-fold size: the means differ slightly)
            for i in range(5):
                key = f"split{i}_test_score"
                assert np.array_equal(a.cv_results_[key], b.cv_results_[key]), key
            print(f"{title}, LocalCluster of {args.workers} single-thread worker processes, "
                  f"median of {args.repeat}")
            med_ours, med_theirs = compare("hpsearch run_search(workers=DaskWorkers)", ours,
                                           "dask_ml GridSearchCV(scheduler=client)", theirs, args.repeat,
                                           workers=args.workers)
            print(f"  ratio hpsearch / dask-ml = {med_ours / med_theirs:.2f}  (target <= 0.8)\n")

        n_folds = 2
        n_candidates = args.tasks // n_folds
        Xs = np.zeros((4, 1))

        def ours_noop():
            return run_search(NoOp(), {"i": list(range(n_candidates))}, Xs, cv=n_folds, refit=False,
                              workers=pool, progress=False)

        def client_map():
            return client.gather(client.map(noop, range(n_candidates * n_folds), pure=False))

        ours_noop(), client_map()  # warm-up
        print(f"{n_candidates * n_folds} no-op tasks on the same cluster, median of {args.repeat}")
        med_ours, med_map = compare("hpsearch run_search(NoOp, workers=DaskWorkers)", ours_noop,
                                    "client.gather(client.map(noop, ...))", client_map, args.repeat)
        tasks = n_candidates * n_folds
        print(f"  per task: hpsearch {1e3 * med_ours / tasks:.2f} ms, client.map {1e3 * med_map / tasks:.2f} ms;"
              f" ratio {med_ours / med_map:.2f}  (target < 1.0)")
    print("load average at end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
