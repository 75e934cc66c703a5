"""The search every recipe runs: an SVC on digits, a 4 x 3 grid, 5-fold CV.

``python search.py dask ADDRESS``           DaskWorkers on a running Dask scheduler
``python search.py remote [MIN_WORKERS]``   RemoteWorkers on tcp://0.0.0.0:5555 (token from
                                            $HPSEARCH_TOKEN), for hpsearch-worker processes
"""

from __future__ import annotations

import logging
import os
import sys

from sklearn.datasets import load_digits
from sklearn.svm import SVC

from hpsearch import DaskWorkers, RemoteWorkers, run_search

GRID = {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}


def search(pool):
    X, y = load_digits(return_X_y=True)
    result = run_search(SVC(), GRID, X, y, cv=5, workers=pool, progress=False)
    print(result.summary())
    return result


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO)
    if argv[:1] == ["dask"] and len(argv) == 2:
        with DaskWorkers(argv[1]) as pool:
            search(pool)
    elif argv[:1] == ["remote"] and len(argv) <= 2:
        min_workers = int(argv[1]) if len(argv) == 2 else 1
        with RemoteWorkers("tcp://0.0.0.0:5555", token=os.environ["HPSEARCH_TOKEN"],
                           min_workers=min_workers, join_timeout=600) as pool:
            search(pool)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
