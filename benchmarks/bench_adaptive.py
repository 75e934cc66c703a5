"""Adaptive search: time to reach within 0.5% of the full grid's best CV score.

An SGDClassifier(max_iter=20) on make_classification (``--rows`` rows, 20 features) over a
20 x 4 x 3 grid (alpha x loss x penalty: 240 candidates), 5-fold CV, 2 workers.
Every method runs in the same process, interleaved ``--repeat`` times (medians):

* hpsearch: the full grid (the reference), random search (``--n-iter`` candidates),
  successive halving (synchronous, scikit-learn's candidates), ASHA
  (``asynchronous=True``), Hyperband (brackets of halving over the grid's points) and
  the full grid with ``prune=True``;
* scikit-learn's ``HalvingGridSearchCV(n_jobs=2)`` (the same halving as hpsearch's);
* dask-ml's ``HyperbandSearchCV`` (``partial_fit``, a hold-out set instead of CV) on a
  LocalCluster of 2 single-threaded workers, ``max_iter=27``.

A method *reaches* when the candidate it picks has a full-grid CV score within 0.5%
of the best one; its time is its whole run (the time to know its answer).

A second part measures idle worker time with 4 thread workers (``ThreadWorkers(4)``),
between the first task's start and the last task's end: synchronous halving waits at
every rung barrier, ASHA does not. Idle = 4 x span - busy, where busy sums the wall
time of every task (the benchmark wraps ``ThreadWorker``'s ``submit``, ``submit_many``
and task runner to time them), split into *waiting* (a slot was free and the scheduler
had no task for it), *hand-off* (the task was handed over, the slot not yet running
it) and *tail* (a slot's last task ended before the search's last one). The space is
the same grid with fit times that depend on the hyperparameters, as in real spaces:
``SleepFit`` sleeps 2 to 20 passes over its rows (:func:`fit_epochs`: more at small
``alpha``, twice as many with an l1 or elastic-net penalty; 10x across the grid) at ten
times SGD's measured time per row and pass (:data:`SECONDS_PER_ROW_PASS`), so four run at once whatever the machine's load
and idle time comes from the search alone; it is measured with cv=5 and cv=3 (a
candidate's 5 folds fill 4 slots unevenly, 3 folds leave one empty at a barrier), and
with the real SGD fits (their times vary 3.5x across the grid, 10th to 90th
percentile: the penalty and the epochs to convergence; with 4 threads on fewer cores an idle slot's core goes to
the other fits, so there idle time costs less than it shows). SleepFit scores a
candidate by a fixed function of its parameters plus noise hashed from the candidate and
its test rows, so promotions vary across candidates and seeds as real ones do. Last,
the same SleepFit searches run in virtual time: ``run_search`` itself (the same
strategy, plan, subsampled splits, fits and scores) with its scheduler loop replaced by
one on a simulated clock (the real ``SchedulerState``, each task lasting exactly what
its fit would sleep, no threads), over several seeds: the idle time the scheduling
itself leaves, counted as in the threaded runs. Target: ASHA's idle fraction at most a
third of synchronous halving's, threaded and virtual, cv=5 and cv=3.

    python benchmarks/bench_adaptive.py [--rows 20000] [--repeat 3] [--idle-only | --no-idle]   # after pip install .[test]

Targets: hpsearch's adaptive searches at least 5x faster than the full grid, and
hpsearch's halving at least 1.3x faster than scikit-learn's on 2 workers.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import HalvingGridSearchCV

from hpsearch import run_search

GRID = {
    "alpha": [float(a) for a in np.logspace(-7, -1, 20)],
    "loss": ["hinge", "log_loss", "modified_huber", "squared_hinge"],
    "penalty": ["l2", "l1", "elasticnet"],
}
GRID_KEYS = tuple(GRID)


def key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(float(params[k]) if k == "alpha" else params[k] for k in GRID_KEYS)


def patch_dask_ml() -> None:
    """dask-ml 2025.1 calls ``dask.persist`` inside its asynchronous fit, which dask
    2025+ refuses for an asynchronous client; let it use the client as dask did before."""
    import dask.base

    dask.base._ensure_not_async = lambda client: client.get  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-iter", type=int, default=48, help="random search's candidates")
    parser.add_argument("--no-dask", action="store_true", help="skip dask-ml")
    parser.add_argument("--idle-only", action="store_true", help="only the idle-time part")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-time part")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = make_classification(args.rows, 20, n_informative=10, random_state=0)
    est = SGDClassifier(max_iter=20, random_state=0)  # bounded epochs: no fit runs for minutes
    if args.idle_only:
        print_idle(idle_time(X, y, args.repeat), X, y)
        return
    w = args.workers
    common = dict(cv=5, workers=w, progress=False, random_state=0)

    results: dict[str, Any] = {}

    def grid() -> dict[str, Any]:
        results["grid"] = run_search(est, GRID, X, y, **common)
        return results["grid"].best_params_

    methods: dict[str, Callable[[], dict[str, Any]]] = {
        "hpsearch grid (all 240)": grid,
        f"hpsearch random ({args.n_iter})": lambda: run_search(
            est, GRID, X, y, strategy="random", n_iter=args.n_iter, **common).best_params_,
        "hpsearch halving": lambda: run_search(est, GRID, X, y, strategy="halving", **common).best_params_,
        "hpsearch ASHA": lambda: run_search(
            est, GRID, X, y, strategy="halving", asynchronous=True, **common).best_params_,
        "hpsearch hyperband": lambda: run_search(
            est, GRID, X, y, strategy="hyperband", min_resources=250, **common).best_params_,
        "hpsearch grid prune=True": lambda: run_search(est, GRID, X, y, prune=True, **common).best_params_,
        f"sklearn HalvingGridSearchCV(n_jobs={w})": lambda: HalvingGridSearchCV(
            est, GRID, cv=5, n_jobs=w, random_state=0).fit(X, y).best_params_,
    }
    cluster = client = None
    if not args.no_dask:
        from dask_ml.model_selection import HyperbandSearchCV
        from distributed import Client, LocalCluster

        patch_dask_ml()
        cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=False, dashboard_address=None)
        client = Client(cluster)
        methods["dask-ml HyperbandSearchCV"] = lambda: HyperbandSearchCV(
            est, GRID, max_iter=27, random_state=0).fit(X, y, classes=[0, 1]).best_params_
    try:
        times: dict[str, list[float]] = {name: [] for name in methods}
        picked: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):  # interleaved, so machine noise hits all alike
            for name, run in methods.items():
                start = time.perf_counter()
                picked[name] = run()
                times[name].append(time.perf_counter() - start)
                print(f"  ran {name}: {times[name][-1]:.2f} s", flush=True)
        idle = None if args.no_idle else idle_time(X, y, args.repeat)
        reference = results["grid"].cv_results_  # the full grid is the reference
        scores = {key(p): s for p, s in zip(reference["params"], reference["mean_test_score"])}
        best = max(scores.values())
    finally:
        if client is not None:
            client.close()
            cluster.close()

    grid_time = statistics.median(times["hpsearch grid (all 240)"])
    print(f"SGDClassifier(max_iter=20), {args.rows} rows x 20 features, 240-candidate grid, cv=5, {w} workers, "
          f"median of {args.repeat}; full-grid best CV score {best:.4f}")
    print(f"  {'method':40s} {'time':>8s} {'grid/x':>7s} {'picked':>8s} {'gap':>7s}  reached")
    for name in methods:
        med = statistics.median(times[name])
        score = scores[key(picked[name])]
        gap = (best - score) / best
        print(f"  {name:40s} {med:7.2f}s {grid_time / med:6.1f}x {score:8.4f} {gap:6.2%}  "
              f"{'yes' if gap <= 0.005 else 'NO'}   {sorted(round(t, 2) for t in times[name])}")
    sk = statistics.median(times[f"sklearn HalvingGridSearchCV(n_jobs={w})"])
    ours = statistics.median(times["hpsearch halving"])
    print(f"  scikit-learn halving / hpsearch halving = {sk / ours:.2f}x (target >= 1.3)")
    print(f"  scikit-learn halving / hpsearch ASHA    = {sk / statistics.median(times['hpsearch ASHA']):.2f}x")
    if idle is not None:
        print_idle(idle, X, y)


def fit_epochs(alpha: float, penalty: str) -> float:
    """The cost model of the idle-time part: the passes over the data a fit of these
    hyperparameters makes. Like SGD's with a tolerance, it falls as regularisation
    grows (10 passes at the grid's smallest ``alpha``, 2 at its largest, log-linearly),
    and an l1 or elastic-net penalty doubles it (SGD's measured cost here): 2 to 20
    passes, fits 10x apart across the grid, as fit times vary in real spaces (SVC over
    ``C``, boosting over depth)."""
    position = GRID["alpha"].index(alpha) / (len(GRID["alpha"]) - 1)
    return (10 - 8 * position) * (1 if penalty == "l2" else 2)


#: Time per training row and pass over the data: ten times SGDClassifier's measured
#: 0.2 us on one free core (20 features), as for a costlier model (kernel SVC, boosted
#: trees are slower still). At SGD's own scale a rung-0 fit sleeps about a millisecond,
#: as long as a sleeping thread may take to wake up on a loaded machine, and that
#: wake-up, not the hyperparameters, would set the fit times.
SECONDS_PER_ROW_PASS = 2e-6
SECONDS_PER_FIT = 0.005  # the fixed cost of a fit and its scoring


class SleepFit(ClassifierMixin, BaseEstimator):
    """Fits that sleep as long as :func:`fit_epochs` passes over their rows would take
    (so four run at once whatever the machine's load, and idle time comes from the
    search alone, not from fits waiting for a core), scored by a fixed function of the
    parameters plus fold noise that shrinks with the training size (so successive
    halving has something to rank)."""

    def __init__(self, alpha: float = 1e-4, loss: str = "hinge", penalty: str = "l2",
                 max_iter: int = 20, random_state: Any = None) -> None:
        self.alpha = alpha
        self.loss = loss
        self.penalty = penalty
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> SleepFit:
        sleep(SECONDS_PER_FIT + SECONDS_PER_ROW_PASS * fit_epochs(self.alpha, self.penalty) * len(X))
        self.classes_ = np.unique(y)
        self.n_rows_ = len(X)
        return self

    def score(self, X: Any, y: Any) -> float:
        """:func:`quality` plus noise drawn from the candidate and its test rows (a hash,
        the same in every process and run), shrinking with the training size."""
        seed = repr((self.alpha, self.loss, self.penalty, len(X), round(float(np.sum(X[:3])), 6)))
        noise = np.sin(zlib.crc32(seed.encode()) % 100_000) * (1000 / self.n_rows_) ** 0.5
        return quality(self.alpha, self.loss) + 0.05 * float(noise)


#: How SleepFit waits: ``time.sleep``, or in virtual time a call that adds the
#: seconds to the running task's duration (see :func:`virtual_idle`).
sleep: Callable[[float], None] = time.sleep


def quality(alpha: float, loss: str) -> float:
    """SleepFit's score without noise: best at ``alpha=1e-4``."""
    return float(-abs(np.log10(alpha) + 4) / 3 + 0.01 * GRID["loss"].index(loss))


class _TaskClock:
    """When each task run by thread workers was handed to them, and when it started and
    ended on which slot thread (wraps ``ThreadWorker``'s ``submit``, ``submit_many``
    and the method its slot threads run a task with)."""

    def __init__(self) -> None:
        self.handed: dict[tuple[int, int], float] = {}
        self.runs: list[tuple[int, float, float, tuple[int, int]]] = []  # thread, start, end, task
        self._lock = threading.Lock()

    def __enter__(self) -> _TaskClock:
        from hpsearch.workers.threads import ThreadWorker

        self._cls = ThreadWorker
        self._saved = ThreadWorker.submit, ThreadWorker.submit_many, ThreadWorker._run
        submit, submit_many, run = self._saved

        def timed_submit(worker: Any, task: Any) -> None:
            self.handed[task.task_id, task.attempt] = time.perf_counter()
            submit(worker, task)

        def timed_submit_many(worker: Any, tasks: Any) -> None:
            now = time.perf_counter()
            for task in tasks:
                self.handed[task.task_id, task.attempt] = now
            submit_many(worker, tasks)

        def timed_run(worker: Any, task: Any) -> None:
            start = time.perf_counter()
            try:
                run(worker, task)
            finally:
                with self._lock:
                    self.runs.append((threading.get_ident(), start, time.perf_counter(), (task.task_id, task.attempt)))

        ThreadWorker.submit, ThreadWorker.submit_many, ThreadWorker._run = (  # type: ignore[method-assign]
            timed_submit, timed_submit_many, timed_run)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cls.submit, self._cls.submit_many, self._cls._run = self._saved  # type: ignore[method-assign]

    def idle(self, workers: int) -> dict[str, float]:
        """Idle worker time between the first task's start and the last one's end, as a
        fraction of ``workers`` x that span, and its parts: ``waiting`` (a slot was free
        and the scheduler had no task for it: the strategy had none to give, or was
        being asked), ``handoff`` (the task was handed over, the slot not yet running it)
        and ``tail`` (a slot's last task ended before the search's last one)."""
        first = min(s for _, s, _, _ in self.runs)
        last = max(e for _, _, e, _ in self.runs)
        total = workers * (last - first)
        parts = {"waiting": 0.0, "handoff": 0.0, "tail": 0.0}
        slots: dict[int, list[tuple[float, float, tuple[int, int]]]] = {}
        for thread, start, end, task in self.runs:
            slots.setdefault(thread, []).append((start, end, task))
        for runs in slots.values():
            runs.sort()
            free = first  # when the slot was last free
            for start, end, task in runs:
                handed = self.handed.get(task, start)
                parts["waiting"] += max(0.0, min(handed, start) - free)
                parts["handoff"] += start - max(free, min(handed, start))
                free = end
            parts["tail"] += last - free
        busy = sum(e - s for _, s, e, _ in self.runs)
        out = {name: value / total for name, value in parts.items()}
        out["idle"] = (total - busy) / total
        out["seconds"] = total - busy
        out["tasks"] = len(self.runs)
        out["span"] = last - first
        return out


IDLE_SPACES = ("SleepFit, cv=5", "SleepFit, cv=3", "SGD, cv=5")


def idle_time(X: Any, y: Any, repeat: int, workers: int = 4) -> dict[str, dict[str, float]]:
    """Idle worker time of synchronous halving and ASHA on ``workers`` thread workers
    (medians over ``repeat`` alternating runs, run ``r`` with ``random_state=r``: ASHA's
    order of the grid), per space of :data:`IDLE_SPACES`."""
    from hpsearch import ThreadWorkers

    out: dict[str, list[dict[str, float]]] = {}
    sgd = SGDClassifier(max_iter=20, random_state=0)
    for seed in range(repeat):
        for space in IDLE_SPACES:
            estimator = sgd if space.startswith("SGD") else SleepFit()
            for name, asynchronous in (("synchronous halving", False), ("ASHA", True)):
                with _TaskClock() as clock:
                    result = run_search(estimator, GRID, X, y, strategy="halving", asynchronous=asynchronous,
                                        cv=int(space[-1]), workers=ThreadWorkers(workers), progress=False,
                                        random_state=seed, refit=False)
                idle = clock.idle(workers)
                idle["idle promotions"] = float(np.sum(result.cv_results_.get("idle_promotion", 0)))
                out.setdefault(f"{space}: {name}", []).append(idle)
    return {name: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for name, runs in out.items()}


def virtual_idle(X: Any, y: Any, cv: int, asynchronous: bool, seed: int = 0, workers: int = 4) -> dict[str, float]:
    """The SleepFit space in virtual time: ``run_search`` as in :func:`idle_time` (the
    same strategy, plan, subsampled splits, fits and scores: :func:`hpsearch.evaluation.evaluate`
    runs every task), but its scheduler loop is replaced by one that keeps a simulated
    clock: ``workers`` slots, a task lasting exactly the seconds its fit would sleep,
    the real ``SchedulerState`` handing tasks out one by one (no batches, no threads,
    no hand-off, no wake-up). Idle is counted as in :meth:`_TaskClock.idle`: the time
    slots run no task between the first task's start and the last one's end, the idle
    the scheduling itself leaves (barriers, the end of the search)."""
    from hpsearch import ThreadWorkers, _engine
    from hpsearch.evaluation import evaluate

    spans: list[tuple[float, float]] = []

    def scheduler(strategy: Any, pools: Any, context: Any, *, score_key: str, **_: Any) -> Any:
        return _simulate(strategy, context, score_key, workers, spans, evaluate)

    saved = _engine.run_scheduler
    _engine.run_scheduler = scheduler  # type: ignore[assignment]
    try:
        result = run_search(SleepFit(), GRID, X, y, strategy="halving", asynchronous=asynchronous, cv=cv,
                            workers=ThreadWorkers(workers), progress=False, random_state=seed, refit=False)
    finally:
        _engine.run_scheduler = saved  # type: ignore[assignment]
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    busy = sum(e - s for s, e in spans)
    total = workers * (last - first)
    return {"idle": (total - busy) / total, "seconds": total - busy, "tasks": len(spans), "span": last - first,
            "idle promotions": float(np.sum(result.cv_results_.get("idle_promotion", 0)))}


def _simulate(strategy: Any, context: Any, score_key: str, workers: int, spans: list[tuple[float, float]],
              evaluate: Callable[..., Any]) -> list[Any]:
    """A search's scheduler loop in virtual time (see :func:`virtual_idle`)."""
    import heapq

    from hpsearch.scheduler.loop import ask
    from hpsearch.scheduler.state import Ask, Dispatch, DispatchBatch, SchedulerState, Tell
    from hpsearch.workers.base import TaskFinished, WorkerJoined

    global sleep
    state = SchedulerState(context.n_splits, list(context.scorers), score_key, error_score=context.error_score,
                           split_offsets=context.subsample_offsets,
                           idle_asks=callable(getattr(strategy, "ask_idle", None)))

    class Slots:
        name, slots, prefetch = "w", workers, 0

    now = 0.0
    events: list[tuple[float, int, Any, Any]] = []
    waiting: list[Any] = []
    free = workers
    slept: list[float] = []

    def carry_out(commands: list[Any]) -> None:
        while commands:
            command = commands.pop(0)
            if isinstance(command, Ask):
                commands += state.handle(ask(strategy, command), now)
            elif isinstance(command, Tell):
                strategy.tell(command.candidate_id, command.score)
            elif isinstance(command, (Dispatch, DispatchBatch)):
                waiting.extend(command.tasks if isinstance(command, DispatchBatch) else (command.task,))

    def start_tasks() -> None:
        nonlocal free
        while waiting and free:
            task = waiting.pop(0)
            free -= 1
            slept.clear()
            result = evaluate(context, task.params, task.fold)
            seconds = sum(slept)
            spans.append((now, now + seconds))
            heapq.heappush(events, (now + seconds, task.task_id, task, result))

    saved, sleep = sleep, slept.append
    try:
        carry_out(state.handle(WorkerJoined(Slots()), now))  # type: ignore[arg-type]
        carry_out(state.start(now))
        start_tasks()
        while events:
            now, _, task, result = heapq.heappop(events)
            free += 1
            carry_out(state.handle(TaskFinished("w", task.task_id, task.attempt, result), now))
            start_tasks()
    finally:
        sleep = saved
    if not state.done:
        raise RuntimeError("the simulated search did not finish")
    return state.results()


def print_idle(idle: dict[str, dict[str, float]], X: Any, y: Any, seeds: int = 5) -> None:
    print("Idle worker time, 4 thread workers (ThreadWorkers(4)), first task's start to last task's end, "
          "median over runs; parts: waiting for a task / hand-off / tail:")
    for name, r in idle.items():
        print(f"  {name:40s} idle {r['idle']:6.2%} = {r['waiting']:6.2%} + {r['handoff']:6.2%} + {r['tail']:6.2%}"
              f"  ({r['seconds']:.2f} worker-s, span {r['span']:.2f} s, {int(r['tasks'])} tasks, "
              f"{int(r['idle promotions'])} idle promotions)")
    for space in IDLE_SPACES:
        sync, asha = idle[f"{space}: synchronous halving"], idle[f"{space}: ASHA"]
        print(f"  {space}: ASHA / synchronous: idle fraction {asha['idle'] / sync['idle']:.2f} (target <= 0.33), "
              f"idle worker-s {asha['seconds'] / sync['seconds']:.2f}, span {asha['span'] / sync['span']:.2f}")
    print(f"Virtual time (run_search with its scheduler loop on a simulated clock: the real SchedulerState, strategy, "
          f"splits, fits and scores; SleepFit's sleeps as task times), median over random_state 0..{seeds - 1}:")
    for cv in (5, 3):
        runs = {name: [virtual_idle(X, y, cv, asynchronous, seed) for seed in range(seeds)]
                for name, asynchronous in (("synchronous", False), ("ASHA", True))}
        med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
        ratios = sorted(a["idle"] / s["idle"] for s, a in zip(runs["synchronous"], runs["ASHA"]))
        sync, asha = med["synchronous"], med["ASHA"]
        print(f"  cv={cv}: synchronous idle {sync['idle']:6.2%} ({int(sync['tasks'])} tasks, span {sync['span']:.2f} s), "
              f"ASHA idle {asha['idle']:6.2%} ({int(asha['tasks'])} tasks, span {asha['span']:.2f} s, "
              f"{int(asha['idle promotions'])} idle promotions): idle fraction ratio {asha['idle'] / sync['idle']:.2f} "
              f"(per seed {', '.join(f'{r:.2f}' for r in ratios)}), span ratio {asha['span'] / sync['span']:.2f}")


if __name__ == "__main__":
    main()
