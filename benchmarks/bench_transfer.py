"""Shipping a dataset to worker processes, against a raw pyzmq send of the same buffer.

    python benchmarks/bench_transfer.py [--gib 1.0]

Measures, over tcp loopback, the time from ``pool.start`` (serialize, content id,
sign, send in credit-paced chunks, verify, rebuild) until every worker has the context
loaded, for 1 and 2 workers; the master's memory growth; and each worker's peak RSS.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil
import zmq
from sklearn.dummy import DummyRegressor
from sklearn.metrics import get_scorer

from hpsearch import LocalProcesses
from hpsearch.evaluation import EvaluationContext


def raw_send(buffer: np.ndarray) -> float:
    """Seconds to push the buffer (64 MiB frames, zero-copy) through tcp loopback."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    view = memoryview(buffer).cast("B")
    step = 64 << 20
    frames = [view[i:i + step] for i in range(0, view.nbytes, step)]
    got = []
    receiver = threading.Thread(target=lambda: got.append(pull.recv_multipart(copy=False)))
    receiver.start()
    start = time.perf_counter()
    push.send_multipart(frames, copy=False)
    receiver.join()
    elapsed = time.perf_counter() - start
    del got
    for sock in (push, pull):
        sock.close(linger=0)
    ctx.term()
    return elapsed


class PeakRSS:
    """Samples the peak RSS of some processes on a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = {p.pid: 0 for p in self.procs}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            for proc in self.procs:
                try:
                    self.peak[proc.pid] = max(self.peak[proc.pid], proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.02)

    def stop(self) -> dict[int, int]:
        self._stop = True
        self._thread.join()
        return self.peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    n_bytes = int(args.gib * (1 << 30))
    X = np.random.default_rng(0).random(n_bytes // 8).reshape(-1, 16)
    y = np.zeros(len(X))
    gb = X.nbytes / 1e9
    raw = raw_send(X)
    print(f"dataset {X.nbytes / (1 << 30):.2f} GiB; raw pyzmq tcp send: {raw:.2f} s = {gb / raw:.2f} GB/s")
    me = psutil.Process()
    for n in (1, 2):
        context = EvaluationContext(DummyRegressor(), X, y, splits=[(np.arange(2), np.arange(2, 4))],
                                    scorers={"score": get_scorer("r2")})
        with LocalProcesses(n, start_timeout=300, heartbeat_timeout=120) as pool:
            baseline = {p.pid: psutil.Process(p.pid).memory_info().rss for p in pool.processes}
            sampler = PeakRSS([p.pid for p in pool.processes] + [me.pid])
            before = me.memory_info().rss
            start = time.perf_counter()
            pool.start(context, lambda event: None)
            elapsed = time.perf_counter() - start
            peak = sampler.stop()
            pool.stop()
        master_growth = peak[me.pid] - before
        worker_peak = max(peak[p] - baseline[p] for p in baseline)
        rate = n * gb / elapsed
        print(f"{n} worker(s): {elapsed:.2f} s, {rate:.2f} GB/s aggregate = {rate / (gb / raw):.0%} of raw "
              f"(target >= 70%); master growth {master_growth / X.nbytes:.1%} of data (target < 10%); "
              f"worker peak {worker_peak / X.nbytes:.2f}x data above its idle RSS (target < 1.5x)")


if __name__ == "__main__":
    main()
