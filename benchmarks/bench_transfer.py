"""Shipping a dataset to worker processes, against a raw pyzmq send of the same buffer.

    python benchmarks/bench_transfer.py [--gib 1.0]

Measures, over tcp loopback, the time from ``pool.start`` (serialize, content id,
sign, send in credit-paced chunks, verify, rebuild) until every worker has the context
loaded, for 1 and 2 workers; the master's memory growth; and each worker's peak RSS.

The baseline is a raw pyzmq PUSH of the same buffer (64 MiB frames, zero-copy) to a
PULL socket in another process, as a worker is (a same-process send is printed too).
Every receiver needs as much fresh memory as the data; on virtual machines that return
freed memory to the host, touching it first costs more than the network copy, so each
timed run starts from a stated memory state, the same for raw sends and hpsearch (see
``prepare_memory``): ``--memory warm``, ``cold`` or ``both`` (default).

``--encrypt both`` (default) also measures each transfer with CurveZMQ encryption
(``encrypt=True``, as ``RemoteWorkers`` does by default off loopback) and prints its
throughput against the plain (signed only) transfer of the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
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


_RECEIVER = """
import sys, zmq
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
port = pull.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
frames = pull.recv_multipart(copy=False)
done = ctx.socket(zmq.PUSH)
done.connect(sys.stdin.readline().strip())
done.send(str(sum(len(f) for f in frames)).encode())
done.close(linger=1000)
pull.close(linger=0)
ctx.term()
"""


def raw_send_to_process(buffer: np.ndarray) -> float:
    """Seconds to push the buffer to a PULL socket in a fresh process, until it has it all."""
    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    try:
        port = int(proc.stdout.readline())
        done = ctx.socket(zmq.PULL)
        done_port = done.bind_to_random_port("tcp://127.0.0.1")
        proc.stdin.write(f"tcp://127.0.0.1:{done_port}\n")
        proc.stdin.flush()
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{port}")
        view = memoryview(buffer).cast("B")
        step = 64 << 20
        frames = [view[i:i + step] for i in range(0, view.nbytes, step)]
        start = time.perf_counter()
        push.send_multipart(frames, copy=False)
        if not done.poll(300_000):
            raise RuntimeError("the raw receiver did not finish within 300 s")
        received = int(done.recv())
        elapsed = time.perf_counter() - start
        assert received == view.nbytes, (received, view.nbytes)
        for sock in (push, done):
            sock.close(linger=0)
        proc.wait(60)
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.term()


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


def prepare_memory(state: str, nbytes: int) -> None:
    """Put the machine's free memory in a known state before a timed transfer.

    On virtual machines that hand freed memory back to the host (Linux free page
    reporting, about 2 s after a free), the first touch of such memory costs several
    milliseconds a MiB, more than the network copy. Whoever receives the data pays it,
    so raw sends and hpsearch are timed under the same state: "warm" touches and
    frees more than the receivers will need just before; "cold" waits until freed
    memory has gone back to the host.
    """
    if state == "warm":
        np.ones(int(nbytes * 1.25), dtype=np.uint8)  # touched, then freed at once
    else:
        time.sleep(4.0)


def transfer(X: np.ndarray, n: int, state: str, encrypt: bool = False) -> tuple[float, int, int]:
    """Seconds until n fresh workers hold the context; master growth; worker peak."""
    y = np.zeros(len(X))
    context = EvaluationContext(DummyRegressor(), X, y, splits=[(np.arange(2), np.arange(2, 4))],
                                scorers={"score": get_scorer("r2")})
    me = psutil.Process()
    with LocalProcesses(n, start_timeout=300, heartbeat_timeout=120, encrypt=encrypt) as pool:
        baseline = {p.pid: psutil.Process(p.pid).memory_info().rss for p in pool.processes}
        prepare_memory(state, n * X.nbytes)
        before = me.memory_info().rss
        sampler = PeakRSS([p.pid for p in pool.processes] + [me.pid])
        start = time.perf_counter()
        pool.start(context, lambda event: None)
        elapsed = time.perf_counter() - start
        peak = sampler.stop()
        pool.stop()
    return elapsed, peak[me.pid] - before, max(peak[p] - baseline[p] for p in baseline)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median shown)")
    parser.add_argument("--memory", choices=["warm", "cold", "both"], default="both")
    parser.add_argument("--encrypt", choices=["off", "on", "both"], default="both",
                        help="CurveZMQ encryption for the hpsearch transfers")
    args = parser.parse_args()
    n_bytes = int(args.gib * (1 << 30))
    X = np.random.default_rng(0).random(n_bytes // 8).reshape(-1, 16)
    gb = X.nbytes / 1e9
    print(f"dataset {X.nbytes / (1 << 30):.2f} GiB, tcp loopback, median of {args.repeat} run(s)")
    for state in (["warm", "cold"] if args.memory == "both" else [args.memory]):
        same, raw = [], []
        for _ in range(args.repeat):
            prepare_memory(state, X.nbytes)
            same.append(raw_send(X))
            prepare_memory(state, X.nbytes)
            raw.append(raw_send_to_process(X))
        same_s, raw_s = float(np.median(same)), float(np.median(raw))
        print(f"[{state} memory] raw pyzmq send to another process: {raw_s:.2f} s = {gb / raw_s:.2f} GB/s "
              f"(within one process: {same_s:.2f} s = {gb / same_s:.2f} GB/s)")
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.encrypt]
        for n in (1, 2):
            runs: dict[bool, list[tuple[float, int, int]]] = {mode: [] for mode in modes}
            for _ in range(args.repeat):  # alternating plain and encrypted runs
                for mode in modes:
                    runs[mode].append(transfer(X, n, state, mode))
            rates = {}
            for mode in modes:
                elapsed = float(np.median([r[0] for r in runs[mode]]))
                growth, peak = max(r[1] for r in runs[mode]), max(r[2] for r in runs[mode])
                rate = rates[mode] = n * gb / elapsed
                label = "encrypted" if mode else "plain"
                print(f"[{state} memory] {n} worker(s), {label}: {elapsed:.2f} s, {rate:.2f} GB/s aggregate = "
                      f"{rate / (gb / raw_s):.0%} of raw (target >= 70%; {rate / (gb / same_s):.0%} of the "
                      f"same-process send); master growth {growth / X.nbytes:.1%} of data (target < 10%); "
                      f"worker peak {peak / X.nbytes:.2f}x data above its idle RSS (target < 1.5x)")
            if len(modes) == 2:
                print(f"[{state} memory] {n} worker(s): encrypted throughput = "
                      f"{rates[True] / rates[False]:.0%} of plain")


if __name__ == "__main__":
    main()
