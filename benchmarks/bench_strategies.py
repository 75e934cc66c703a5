"""Bayesian vs random search on synthetic objectives, and the cost of one proposal.

Run by hand from the repository root::

    python benchmarks/bench_strategies.py [--seeds 5] [--n-iter 30] [--sizes 50 100 200]

Prints (1) the mean best-so-far curve of each strategy on Branin and Hartmann-6
(maximising their negatives), with the ratio of their gaps to the optimum, and
(2) the time one ``ask`` takes once the surrogate has 50, 100, 200 observations:
in asynchronous mode with 4 candidates in flight (a constant-liar proposal), and
in synchronous mode the ``tell`` that completes a batch (where the next batch is
computed, so that ``ask`` itself is instant).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpsearch.strategies import BayesStrategy, RandomStrategy  # noqa: E402
from tests.strategies.objectives import (  # noqa: E402
    BRANIN_MAX,
    BRANIN_SPACE,
    HARTMANN6_MAX,
    HARTMANN6_SPACE,
    neg_branin,
    neg_hartmann6,
)

PROBLEMS = {
    "branin": (BRANIN_SPACE, neg_branin, BRANIN_MAX),
    "hartmann6": (HARTMANN6_SPACE, neg_hartmann6, HARTMANN6_MAX),
}


def best_so_far(strategy, objective, workers: int = 5) -> np.ndarray:
    scores: dict[int, float] = {}
    while not strategy.finished:
        for cand in strategy.ask(workers):
            scores[cand.id] = objective(cand.params)
            strategy.tell(cand.id, scores[cand.id])
    return np.maximum.accumulate([scores[i] for i in sorted(scores)])


def curves(seeds: int, n_iter: int, acq_func: str) -> None:
    marks = [m for m in (5, 10, 15, 20, 25, 30, 40, 50) if m <= n_iter]
    for name, (space, objective, optimum) in PROBLEMS.items():
        rows = {}
        for kind in ("random", "bayes"):
            start = time.perf_counter()
            runs = [
                best_so_far(
                    BayesStrategy(space, n_iter, random_state=s, acq_func=acq_func)
                    if kind == "bayes"
                    else RandomStrategy(space, n_iter, random_state=s),
                    objective,
                )
                for s in range(seeds)
            ]
            rows[kind] = (np.mean(runs, axis=0), time.perf_counter() - start)
        print(f"\n{name}: mean best-so-far over {seeds} seeds (optimum {optimum:.4f}), bayes acq_func={acq_func}")
        print("  evals  " + "".join(f"{m:>9d}" for m in marks) + "    time")
        for kind, (curve, seconds) in rows.items():
            print(f"  {kind:<7}" + "".join(f"{curve[m - 1]:9.4f}" for m in marks) + f"  {seconds:6.1f} s")
        gap_b = optimum - rows["bayes"][0][-1]
        gap_r = optimum - rows["random"][0][-1]
        print(f"  gap to optimum after {n_iter}: random/bayes = {gap_r / max(gap_b, 1e-12):.1f}x")


def ask_times(sizes: list[int], repeats: int) -> None:
    space, objective, _ = PROBLEMS["hartmann6"]
    print(f"\ntime of one proposal on hartmann6 (GP, gp_hedge; median of {repeats})")
    print("  observations   async ask(1), 4 in flight   sync tell completing a batch of 5")
    for n in sizes:
        # n_initial_points=n: the first n candidates are random, so warming up is cheap.
        a = BayesStrategy(space, n + 5 * repeats, random_state=0, n_initial_points=n, asynchronous=True)
        while len(a.history) < n:
            cand = a.ask(1)[0]
            a.tell(cand.id, objective(cand.params))
        async_times = []
        for _ in range(repeats):
            pending = a.ask(4)
            start = time.perf_counter()
            extra = a.ask(1)
            async_times.append(time.perf_counter() - start)
            for c in pending + extra:
                a.tell(c.id, objective(c.params))
        s = BayesStrategy(space, n + 5 * repeats, random_state=0, n_initial_points=n, batch_size=5)
        while len(s.history) < n:
            for c in s.ask(5):
                s.tell(c.id, objective(c.params))
        sync_times = []
        for _ in range(repeats):
            batch = s.ask(5)
            for c in batch[:-1]:
                s.tell(c.id, objective(c.params))
            start = time.perf_counter()
            s.tell(batch[-1].id, objective(batch[-1].params))
            sync_times.append(time.perf_counter() - start)
        print(f"  {n:>12d}   {np.median(async_times):22.3f} s   {np.median(sync_times):26.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-iter", type=int, default=30)
    parser.add_argument("--acq-func", default="gp_hedge")
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 100, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-curves", action="store_true")
    args = parser.parse_args()
    if not args.skip_curves:
        curves(args.seeds, args.n_iter, args.acq_func)
    if args.sizes:
        ask_times(args.sizes, args.repeats)


if __name__ == "__main__":
    main()
