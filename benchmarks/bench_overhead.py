"""Per-task overhead: 5,000 tiny tasks through 2 local worker processes.

    python benchmarks/bench_overhead.py [--tasks 5000] [--processes 2] [--repeat 5]

Prints tasks per second for LocalProcesses (the whole wire protocol: signing,
msgpack, pickle of params, ROUTER/DEALER; tiny tasks travel in batches once their
times are known) and, in the same run, for 2 threads, for scikit-learn's
``GridSearchCV(n_jobs=2)`` on loky (the same search), for joblib's loky calls of a
no-op function (one per task, and auto-batched), and for a raw pyzmq DEALER/ROUTER
round trip (one at a time and pipelined), as yardsticks. The searches alternate
(processes, threads, loky, then again), and each figure is the median of
``--repeat`` runs (range shown): three processes share two cores here, so single
runs vary. Target: at least 10,000 tasks/s through two local worker processes.
The CPU time per task of the master and of the worker processes (medians, psutil) is
printed too: it moves little with the machine's load, which the rates do.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil
import zmq
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV

from hpsearch import LocalProcesses, run_search


class Noop(BaseEstimator):
    """A fit that does nothing: the task's cost is all overhead."""

    def __init__(self, c: int = 0) -> None:
        self.c = c

    def fit(self, X, y=None):
        return self

    def score(self, X, y=None):
        return 0.0


def raw_zmq(n: int, window: int) -> float:
    """Round trips per second of a raw DEALER/ROUTER echo with ``window`` in flight."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    for sock in (router, dealer):  # a full queue would make the ROUTER drop replies
        sock.sndhwm = sock.rcvhwm = 10 * window + 1000
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")

    def echo():
        for _ in range(n):
            router.send_multipart(router.recv_multipart())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    start = time.perf_counter()
    sent = received = 0
    while received < n:
        while sent < n and sent - received < window:
            dealer.send(b"x" * 64)
            sent += 1
        if not dealer.poll(30_000):
            raise RuntimeError(f"raw round trip: no reply within 30 s ({received} of {n})")
        dealer.recv()
        received += 1
    elapsed = time.perf_counter() - start
    thread.join(30)
    for sock in (router, dealer):
        sock.close(linger=0)
    ctx.term()
    return n / elapsed


def noop(i: int) -> int:
    return i


def loky_calls(n: int, workers: int, batch_size: int | str) -> float:
    """No-op calls per second through joblib's loky workers."""
    start = time.perf_counter()
    Parallel(n_jobs=workers, backend="loky", batch_size=batch_size)(delayed(noop)(i) for i in range(n))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folds = 5
    X = np.zeros((50, 2))
    space = {"c": list(range(args.tasks // folds))}
    n = len(space["c"]) * folds

    me = psutil.Process()
    cpu_us: dict[str, list[float]] = {"master": [], "workers": []}

    def cpu_seconds(procs: list[psutil.Process]) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

    def timed(workers) -> float:
        kids = me.children(recursive=True) if isinstance(workers, LocalProcesses) else []
        before = cpu_seconds([me]), cpu_seconds(kids)
        start = time.perf_counter()
        run_search(Noop(), space, X, cv=folds, workers=workers, refit=False, progress=False)
        rate = n / (time.perf_counter() - start)
        if kids:  # CPU per task, which the machine's load does not change much (the rate it does)
            cpu_us["master"].append((cpu_seconds([me]) - before[0]) / n * 1e6)
            cpu_us["workers"].append((cpu_seconds(kids) - before[1]) / n * 1e6)
        return rate

    # loky is slower per task: a fifth of the search keeps the run short (a rate all the same)
    loky_space = {"c": space["c"][: max(1, len(space["c"]) // 5)]}

    def sklearn_loky() -> float:
        start = time.perf_counter()
        GridSearchCV(Noop(), loky_space, cv=folds, n_jobs=args.processes, refit=False).fit(X)
        return len(loky_space["c"]) * folds / (time.perf_counter() - start)

    def summary(rates: list[float]) -> tuple[float, str]:
        return float(np.median(rates)), f"(range {min(rates):,.0f}-{max(rates):,.0f})"

    rates: dict[str, list[float]] = {"procs": [], "threads": [], "loky": []}
    with LocalProcesses(args.processes) as pool:
        timed(pool)  # warm up: ships the context, imports on the workers
        sklearn_loky()  # warm up loky's reusable executor
        for _ in range(args.repeat):
            rates["procs"].append(timed(pool))
            rates["threads"].append(timed(args.processes))
            rates["loky"].append(sklearn_loky())
    procs, procs_range = summary(rates["procs"])
    threads, threads_range = summary(rates["threads"])
    loky, loky_range = summary(rates["loky"])
    calls = loky_calls(n // 5, args.processes, 1)
    batched = loky_calls(4 * n, args.processes, "auto")
    one = raw_zmq(20000, 1)
    piped = raw_zmq(100000, 1000)
    print(f"{n} tiny tasks, median of {args.repeat} searches")
    print(f"  {args.processes} local worker processes: {procs:,.0f} tasks/s {procs_range} (target >= 10,000)")
    master_us, workers_us = float(np.median(cpu_us["master"])), float(np.median(cpu_us["workers"]))
    print(f"    CPU per task: master {master_us:.0f} us, {args.processes} workers {workers_us:.0f} us in all "
          f"(at most {2e6 / (master_us + workers_us):,.0f} tasks/s on 2 free cores)")
    print(f"  {args.processes} threads, same search:   {threads:,.0f} tasks/s {threads_range}")
    print(f"  GridSearchCV(n_jobs={args.processes}), loky ({len(loky_space['c']) * folds} tasks): "
          f"{loky:,.0f} tasks/s {loky_range}"
          f"  (processes = {procs / loky:.2f}x)")
    print(f"  joblib loky no-op calls, one by one: {calls:,.0f}/s; auto-batched: {batched:,.0f}/s")
    print(f"  raw pyzmq round trip, one at a time:  {one:,.0f}/s  (processes = {procs / one:.2f}x)")
    print(f"  raw pyzmq round trip, pipelined:      {piped:,.0f}/s  (processes = {procs / piped:.2f}x)")


if __name__ == "__main__":
    main()
