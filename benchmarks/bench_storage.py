"""Journal cost: the tiny-task search with ``storage=`` on against off, in the same run.

    python benchmarks/bench_storage.py [--tasks 5000] [--processes 2] [--repeat 7]

5,000 tasks whose fit does nothing (the per-task overhead is all there is, so the
journal's cost is as visible as it can be), through 2 threads and through 2 local
worker processes. Runs alternate off/on (each "on" run writes a new SQLite file, so
nothing is resumed), and each figure is the median of ``--repeat`` runs. Target: on is
within 10% of off (ratio >= 0.90). The master's CPU time is shown too: on a shared
machine it varies less than the wall clock.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from sklearn.base import BaseEstimator

from hpsearch import LocalProcesses, run_search


class Noop(BaseEstimator):
    """A fit that does nothing: the task's cost is all overhead."""

    def __init__(self, c: int = 0) -> None:
        self.c = c

    def fit(self, X, y=None):
        return self

    def score(self, X, y=None):
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    folds = 5
    X = np.zeros((50, 2))
    space = {"c": list(range(args.tasks // folds))}
    n = len(space["c"]) * folds
    tmp = tempfile.mkdtemp(prefix="hpsearch-bench-storage-")
    counter = iter(range(10**9))

    def timed(workers, storage: bool) -> tuple[float, float]:
        """Tasks per second, and the master's CPU seconds per 1,000 tasks."""
        path = os.path.join(tmp, f"s{next(counter)}.db") if storage else None
        start, cpu = time.perf_counter(), time.process_time()
        run_search(Noop(), space, X, cv=folds, workers=workers, refit=False, progress=False, storage=path)
        return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / n

    def compare(label: str, workers) -> None:
        timed(workers, False)  # warm up
        timed(workers, True)
        off, on = [], []
        for _ in range(args.repeat):
            off.append(timed(workers, False))
            on.append(timed(workers, True))
        rate_off, rate_on = (float(np.median([r for r, _ in runs])) for runs in (off, on))
        cpu_off, cpu_on = (float(np.median([c for _, c in runs])) for runs in (off, on))
        print(f"  {label:<20} off {rate_off:6,.0f} tasks/s (range {min(r for r, _ in off):,.0f}-"
              f"{max(r for r, _ in off):,.0f})  on {rate_on:6,.0f} tasks/s (range {min(r for r, _ in on):,.0f}-"
              f"{max(r for r, _ in on):,.0f})  on/off = {rate_on / rate_off:.2f};  master CPU per 1,000 tasks: "
              f"off {cpu_off:.3f} s, on {cpu_on:.3f} s (on/off = {cpu_on / cpu_off:.2f})")

    print(f"{n} tiny tasks, storage off vs on, median of {args.repeat} alternating runs (target on/off >= 0.90)")
    compare(f"{args.processes} threads", args.processes)
    with LocalProcesses(args.processes) as pool:
        compare(f"{args.processes} local processes", pool)


if __name__ == "__main__":
    main()
