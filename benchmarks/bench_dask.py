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

A ratio below 1.0 means hpsearch is faster. "lower bound" is a run's fit and score
times (from ``cv_results_``) divided by the worker threads: no engine can finish the
search sooner on those threads, so a contender already close to its own lower bound can
only win by the other one's overhead. "above fits/workers" is a run's time minus its
lower bound: what the engine added, start, refit and idle workers included.

After the timed runs, one more run of each contender is traced on the workers (hpsearch:
each task's start and end on its Dask worker thread; dask-ml: Dask's task stream) and
its time split into: the workers' busy time per thread, the start (call to first task),
the hand-off gaps between a thread's tasks, the tail (a thread idle while others finish
the search's last tasks) and what follows the last task (refit, results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
from distributed import Client, LocalCluster, get_task_stream
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


def _install_trace() -> None:
    """On a Dask worker: note each hpsearch task's (thread, start, end)."""
    import threading

    import hpsearch.workers.dask as module

    if not hasattr(module, "_bench_evaluate"):
        module._bench_evaluate = module.evaluate
    module._bench_trace = trace = []
    evaluate = module._bench_evaluate

    def traced(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return evaluate(*args, **kwargs)
        finally:
            trace.append((threading.get_ident(), start, time.time()))

    module.evaluate = traced


def _take_trace() -> list[tuple[int, float, float]]:
    import hpsearch.workers.dask as module

    trace, module._bench_trace = list(getattr(module, "_bench_trace", [])), []
    module.evaluate = getattr(module, "_bench_evaluate", module.evaluate)
    return trace


def split_time(name: str, start: float, end: float, threads: dict[Any, list[tuple[float, float]]],
               lower: float, n_threads: int) -> None:
    """Print where a traced run's time went, per worker thread (averages)."""
    for spans in threads.values():
        spans.sort()
    last = max(spans[-1][1] for spans in threads.values())
    busy, first, gaps, tail = [], [], [], []
    for spans in threads.values():
        busy.append(sum(b - a for a, b in spans))
        first.append(spans[0][0] - start)
        gaps.append(sum(max(0.0, b[0] - a[1]) for a, b in zip(spans, spans[1:])))
        tail.append(last - spans[-1][1])
    idle_threads = n_threads - len(threads)  # threads that ran nothing count as idle all along
    mean = lambda xs, pad=0.0: (sum(xs) + idle_threads * pad) / n_threads  # noqa: E731
    tasks = sum(len(spans) for spans in threads.values())
    print(f"    {name:<9} {end - start:6.3f} s = busy {mean(busy):.3f} (lower bound {lower:.3f}) + start "
          f"{mean(first, end - start):.3f} + hand-offs {mean(gaps):.3f} ({1e3 * sum(gaps) / max(1, tasks - len(threads)):.1f} "
          f"ms each) + tail {mean(tail):.3f} + after the last task {end - last:.3f}  [{tasks} tasks]")


def trace_ours(client: Client, fn, n_threads: int) -> None:
    client.run(_install_trace)
    start = time.time()
    out = fn()
    end = time.time()
    threads: dict[Any, list[tuple[float, float]]] = {}
    for address, trace in client.run(_take_trace).items():
        for thread, a, b in trace:
            threads.setdefault((address, thread), []).append((a, b))
    split_time("hpsearch", start, end, threads, busy(out) / n_threads, n_threads)


def trace_theirs(client: Client, fn, n_threads: int) -> None:
    with get_task_stream(client) as stream:
        start = time.time()
        out = fn()
        end = time.time()
    threads: dict[Any, list[tuple[float, float]]] = {}
    for task in stream.data:
        for span in task["startstops"]:
            if span["action"] == "compute":
                threads.setdefault((task["worker"], task.get("thread")), []).append((span["start"], span["stop"]))
    split_time("dask-ml", start, end, threads, busy(out) / n_threads, n_threads)


def compare(name_a: str, a, name_b: str, b, repeat: int, workers: int | None = None,
            lowers: dict[str, float] | None = None) -> tuple[float, float]:
    """Median times of ``a`` and ``b``, alternating; with ``workers``, also how far each
    run was above its fits' own time spread over the workers (the overhead), and each
    one's median lower bound put in ``lowers``."""
    times: dict[str, list[float]] = {name_a: [], name_b: []}
    above: dict[str, list[float]] = {name_a: [], name_b: []}
    lower: dict[str, list[float]] = {name_a: [], name_b: []}
    for _ in range(repeat):  # interleaved, so machine noise hits both alike
        for name, fn in ((name_a, a), (name_b, b)):
            elapsed, out = timed(fn)
            times[name].append(elapsed)
            if workers:
                lower[name].append(busy(out) / workers)
                above[name].append(elapsed - lower[name][-1])
    for name in (name_a, name_b):
        line = f"  {name:<44} {statistics.median(times[name]):7.3f} s   {sorted(round(t, 3) for t in times[name])}"
        if workers:
            line += (f"   lower bound {statistics.median(lower[name]):.3f} s, above it "
                     f"{statistics.median(above[name]):.3f} s")
            if lowers is not None:
                lowers[name] = statistics.median(lower[name])
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
            lowers: dict[str, float] = {}
            med_ours, med_theirs = compare("hpsearch run_search(workers=DaskWorkers)", ours,
                                           "dask_ml GridSearchCV(scheduler=client)", theirs, args.repeat,
                                           workers=args.workers, lowers=lowers)
            best = lowers["hpsearch run_search(workers=DaskWorkers)"] / med_theirs
            print(f"  ratio hpsearch / dask-ml = {med_ours / med_theirs:.2f}  (target <= 0.8); with no "
                  f"overhead at all hpsearch would reach {best:.2f} (its lower bound / dask-ml's time)")
            print("  where the time goes (one more traced run each; per worker thread):")
            trace_ours(client, ours, args.workers)
            trace_theirs(client, theirs, args.workers)
            print()

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
