"""Searches that are held up or attacked by their own workers: a slow worker, SIGKILLs.

    python benchmarks/bench_robustness.py stragglers [--workers 4] [--repeat 3]
    python benchmarks/bench_robustness.py churn [--searches 10] [--workers 4]

``stragglers``: a grid of 0.1 s fits on ``--workers`` local worker processes; in the
disturbed runs one worker becomes 50 times slower once a quarter of the fits are
done. Prints the median wall time of undisturbed and disturbed runs (alternating)
and their ratio, for hpsearch's ``LocalProcesses`` and, in the same run, for
scikit-learn's ``GridSearchCV(n_jobs=workers)`` (joblib's loky processes), which has
no straggler handling. The target: hpsearch's disturbed run within 2x of its
undisturbed one.

``churn``: ``--searches`` searches on ``LocalProcesses``, while a thread SIGKILLs a
random working process (one that has joined) every 0.3 to 2 s, whenever at least two
have joined (the pool replaces each one, which takes a few seconds: a faster killer
would leave it empty); prints how many candidates were recorded as failed (every fit
is healthy: the target is 0), how many workers were killed, and the pool size at
the end.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import tempfile
import threading
import time

import numpy as np
from sklearn.base import BaseEstimator


class Slowable(BaseEstimator):
    """Each fit sleeps ``delay`` s, 50 times longer in a process whose pid file exists
    in ``slow_dir``; every fit logs its pid to ``slow_dir/seen``."""

    def __init__(self, c: float = 0.0, delay: float = 0.1, slow_dir: str = "") -> None:
        self.c = c
        self.delay = delay
        self.slow_dir = slow_dir

    def fit(self, X, y=None):
        if self.slow_dir:
            with open(os.path.join(self.slow_dir, "seen"), "a") as f:
                f.write(f"{os.getpid()}\n")
            slow = os.path.exists(os.path.join(self.slow_dir, str(os.getpid())))
        else:
            slow = False
        time.sleep(self.delay * (50 if slow else 1))
        return self

    def score(self, X, y=None):
        return float(-((self.c - 3.0) ** 2))


def disturber(slow_dir: str, after_fits: int, stop: threading.Event) -> threading.Thread:
    """Slow down the process of the first fit seen once ``after_fits`` fits ran."""
    def run() -> None:
        path = os.path.join(slow_dir, "seen")
        while not stop.wait(0.01):
            try:
                pids = open(path).read().split()
            except FileNotFoundError:
                continue
            if len(pids) >= after_fits:
                open(os.path.join(slow_dir, pids[-1]), "w").close()
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def timed_search(kind: str, pool, n_candidates: int, disturbed: bool) -> float:
    from sklearn.model_selection import GridSearchCV

    from hpsearch import run_search

    X = np.random.default_rng(0).normal(size=(40, 2))
    with tempfile.TemporaryDirectory() as slow_dir:
        grid = {"c": [float(c) for c in range(n_candidates)], "slow_dir": [slow_dir]}
        stop = threading.Event()
        if disturbed:
            disturber(slow_dir, n_candidates * 2 // 4, stop)
        start = time.perf_counter()
        if kind == "hpsearch":
            run_search(Slowable(), grid, X, cv=2, workers=pool, refit=False, progress=False)
        else:
            GridSearchCV(Slowable(), grid, cv=2, n_jobs=pool, refit=False).fit(X)
        elapsed = time.perf_counter() - start
        stop.set()
    return elapsed


def stragglers(args: argparse.Namespace) -> None:
    from hpsearch import LocalProcesses

    n_candidates = 20 * args.workers  # 2 folds: 10 rounds of fits per worker, undisturbed
    times: dict[tuple[str, bool], list[float]] = {}
    with LocalProcesses(args.workers) as pool:
        for kind, target in (("hpsearch", pool), ("sklearn", args.workers)):
            timed_search(kind, target, n_candidates, False)  # warm-up (loky starts its workers)
            for _ in range(args.repeat):
                for disturbed in (False, True):
                    times.setdefault((kind, disturbed), []).append(
                        timed_search(kind, target, n_candidates, disturbed))
    print(f"{n_candidates} candidates x 2 folds of 0.1 s on {args.workers} worker processes; one "
          f"worker becomes 50x slower after a quarter of the fits (median of {args.repeat}):")
    for kind in ("hpsearch", "sklearn"):
        calm = statistics.median(times[(kind, False)])
        slow = statistics.median(times[(kind, True)])
        print(f"  {kind:9s} undisturbed {calm:6.2f} s   disturbed {slow:6.2f} s   ratio {slow / calm:5.2f}")


def churn(args: argparse.Namespace) -> None:
    from hpsearch import LocalProcesses, run_search

    rng = random.Random(0)
    X = np.random.default_rng(0).normal(size=(40, 2))
    space = {"c": [float(c) for c in range(40)], "delay": [0.05]}
    failed = kills = 0
    start = time.perf_counter()
    with LocalProcesses(args.workers, heartbeat_timeout=10) as pool:
        stop = threading.Event()

        def killer() -> None:
            nonlocal kills
            while not stop.wait(rng.uniform(0.3, 2.0)):
                joined = [p.pid for p in list(pool._table.peers.values())]
                if len(joined) >= 2:
                    os.kill(rng.choice(joined), signal.SIGKILL)
                    kills += 1

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            for _ in range(args.searches):
                result = run_search(Slowable(), space, X, cv=3, workers=pool, refit=False, progress=False)
                failed += int(np.isnan(result.cv_results_["mean_test_score"]).sum())
        finally:
            stop.set()
            thread.join(10)
        deadline = time.monotonic() + 120
        while pool.n_workers < args.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = pool.n_workers
    print(f"{args.searches} searches x {len(space['c'])} candidates x 3 folds on {args.workers} processes, "
          f"{kills} SIGKILLs, {time.perf_counter() - start:.0f} s: {failed} candidate(s) recorded as failed, "
          f"{alive} of {args.workers} workers alive at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["stragglers", "churn"])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--searches", type=int, default=10)
    args = parser.parse_args()
    stragglers(args) if args.what == "stragglers" else churn(args)


if __name__ == "__main__":
    main()
