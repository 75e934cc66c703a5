"""Scaling: 32 worker slots on tasks that sleep 200 ms.

    python benchmarks/bench_scaling.py [--processes 4] [--slots 8] [--rounds 10]

Efficiency = ideal time (tasks x 0.2 s / slots) / measured time of the search (pool
already started). Sleeping tasks cost no CPU, so this measures dispatch, prefetch and
result latency, not the machine's cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.base import BaseEstimator

from hpsearch import LocalProcesses, run_search

DELAY = 0.2


class Sleep(BaseEstimator):
    def __init__(self, c: int = 0) -> None:
        self.c = c

    def fit(self, X, y=None):
        time.sleep(DELAY)
        return self

    def score(self, X, y=None):
        return float(self.c)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    slots = args.processes * args.slots
    folds = 4
    n_tasks = slots * args.rounds
    space = {"c": list(range(n_tasks // folds))}
    X = np.zeros((40, 2))
    with LocalProcesses(args.processes, slots_per_process=args.slots) as pool:
        run_search(Sleep(), {"c": [0]}, X, cv=folds, workers=pool, refit=False, progress=False)  # warm up
        start = time.perf_counter()
        run_search(Sleep(), space, X, cv=folds, workers=pool, refit=False, progress=False)
        elapsed = time.perf_counter() - start
    ideal = n_tasks * DELAY / slots
    print(f"{slots} slots ({args.processes} processes x {args.slots}), {n_tasks} tasks of {DELAY * 1000:.0f} ms: "
          f"{elapsed:.2f} s, ideal {ideal:.2f} s, efficiency {ideal / elapsed:.0%} (target >= 90%)")


if __name__ == "__main__":
    main()
