"""hpsearch thread workers against scikit-learn's GridSearchCV, same search, same run.

The search of the README: an SVC on digits over a 4 x 3 grid with 5-fold CV (60 fits).
Both run with 2 workers (hpsearch threads vs joblib/loky processes); each is timed
``--repeat`` times after one warm-up run, and the medians are compared.

    python benchmarks/bench_local.py [--repeat 5] [--workers 2]   # after pip install .

A ratio below 1.0 means hpsearch is faster.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

from hpsearch import run_search

GRID = {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)

    def ours():
        return run_search(SVC(), GRID, X, y, cv=5, workers=args.workers, progress=False)

    def theirs():
        return GridSearchCV(SVC(), GRID, cv=5, n_jobs=args.workers).fit(X, y)

    a, b = ours(), theirs()  # warm-up (and loky's worker start-up), and a correctness check
    assert np.array_equal(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"])
    times_ours, times_theirs = [], []
    for _ in range(args.repeat):  # interleaved, so machine noise hits both alike
        times_ours.append(timed(ours))
        times_theirs.append(timed(theirs))
    med_ours, med_theirs = statistics.median(times_ours), statistics.median(times_theirs)
    print(f"SVC on digits, 4x3 grid, cv=5 (60 fits), {args.workers} workers, median of {args.repeat}")
    print(f"  hpsearch run_search(workers={args.workers})   {med_ours:7.2f} s   {sorted(round(t, 2) for t in times_ours)}")
    print(f"  GridSearchCV(n_jobs={args.workers})           {med_theirs:7.2f} s   {sorted(round(t, 2) for t in times_theirs)}")
    print(f"  ratio hpsearch / scikit-learn = {med_ours / med_theirs:.2f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
