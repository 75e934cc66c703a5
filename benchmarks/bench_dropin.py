"""hpsearch.GridSearchCV against scikit-learn's GridSearchCV, the same search in the
same run, alternating, for the per-search overhead of the drop-in class.

Two searches: a tiny one (a decision tree on iris, 2 candidates x 3 folds), where
fixed costs dominate, and the README's (an SVC on digits, 4 x 3 grid, 5 folds).
Each is run with ``n_jobs=None`` (both fit in the calling thread) and with
``n_jobs=2`` (scikit-learn: loky processes; hpsearch: 2 threads), ``--repeat`` times
after a warm-up, alternating scikit-learn and hpsearch; the medians are compared.

    python benchmarks/bench_dropin.py [--repeat 7]   # after pip install .

A ratio below 1.0 means hpsearch is faster.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sklearn import model_selection as sk
from sklearn.datasets import load_digits, load_iris
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

import hpsearch

SEARCHES = {
    "tiny (tree, iris, 2x3 fits)": (DecisionTreeClassifier(random_state=0), {"max_depth": [1, 3]}, 3, load_iris),
    "README (SVC, digits, 12x5 fits)": (SVC(), {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}, 5, load_digits),
}


def timed(search, X, y) -> float:
    start = time.perf_counter()
    search.fit(X, y)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for name, (estimator, grid, cv, load) in SEARCHES.items():
        X, y = load(return_X_y=True)
        for n_jobs in (None, 2):
            ours = hpsearch.GridSearchCV(estimator, grid, cv=cv, n_jobs=n_jobs)
            theirs = sk.GridSearchCV(estimator, grid, cv=cv, n_jobs=n_jobs)
            timed(ours, X, y), timed(theirs, X, y)  # warm-up (loky starts its processes)
            times: dict[str, list[float]] = {"ours": [], "theirs": []}
            for _ in range(args.repeat):
                times["theirs"].append(timed(theirs, X, y))
                times["ours"].append(timed(ours, X, y))
            a, b = statistics.median(times["ours"]), statistics.median(times["theirs"])
            print(f"{name:34s} n_jobs={n_jobs!s:4s}  hpsearch {a * 1e3:8.1f} ms   "
                  f"scikit-learn {b * 1e3:8.1f} ms   ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
