"""Bounded inbound traffic: budgets for strangers, whole-message limits, counted and
rate-limited refusals (the gate without sockets), then a flood during a real search."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import psutil
from hpsearch import RemoteWorkers, run_search
from hpsearch.workers.gate import InboundGate

from .helpers import SleepEstimator


def test_strangers_get_a_small_budget_and_workers_none():
    gate = InboundGate(1000, frames=1, stranger_messages=3, stranger_bytes=250, max_strangers=2)
    assert [gate.admit(b"a", 10, 1, known=False) for _ in range(4)] == [None, None, None, "over budget"]
    assert gate.admit(b"b", 300, 1, known=False) == "over budget"  # bytes count too
    assert all(gate.admit(b"a", 900, 1, known=True) is None for _ in range(100))  # a worker's route
    assert gate.admit(b"a", 10, 1, known=False) is None  # a route starts afresh after its handshake
    assert gate.admit(b"w", 10, 2, known=True) == "frames"  # whole messages: frames and bytes
    assert gate.admit(b"w", 1001, 1, known=True) == "oversized"
    for i in range(100):
        gate.admit(str(i).encode(), 1, 1, known=False)
    assert len(gate._strangers) == 2  # bounded


def test_refusals_are_counted_and_logged_at_a_bounded_rate():
    gate = InboundGate(1000, log_interval=10.0)
    lines = [gate.refuse("invalid" if i % 2 else "over budget", now=i * 0.01) for i in range(10_000)]
    logged = [line for line in lines if line is not None]
    assert len(logged) == 10  # 100 s of virtual time: the first at once, then one per 10 s
    assert gate.refused == {"invalid": 5000, "over budget": 5000}
    assert "refused 1000 inbound message(s) in the last 10 s" in logged[1]


FLOOD = r"""
import os, sys, time, zmq
endpoint, seconds = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
junk = os.urandom(1 << 20)
sent = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = 50
    sock.connect(endpoint)
    try:
        for _ in range(20):
            sock.send(b"HPS\x01B" + junk, zmq.NOBLOCK)  # 1 MiB, never signed
            sent += len(junk)
        sock.send_multipart([junk] * 16, zmq.NOBLOCK)  # 16 MiB in one message
        sent += 16 * len(junk)
        sock.send(junk * 3, zmq.NOBLOCK)  # above MAXMSGSIZE: libzmq drops the connection
        sent += 3 * len(junk)
    except zmq.Again:
        pass
    time.sleep(0.02)
    sock.close(linger=0)
print(sent)
"""


def flood(endpoint: str, seconds: float) -> subprocess.Popen:
    """A process without the token: junk, messages of many frames, oversized frames,
    on one new connection after another, for ``seconds``; prints the bytes it sent."""
    return subprocess.Popen([sys.executable, "-c", FLOOD, endpoint, str(seconds)], stdout=subprocess.PIPE)


def test_a_flood_without_the_token_holds_no_memory_and_the_search_completes(spawn_worker):
    X = np.random.default_rng(5).normal(size=(30, 3))
    space = {"c": [float(c) for c in range(6)], "delay": [0.02]}
    reference = run_search(SleepEstimator(), {**space, "delay": [0.0]}, X, cv=3, workers=1, progress=False)
    me = psutil.Process()
    with RemoteWorkers("tcp://127.0.0.1:*", join_timeout=60, heartbeat_timeout=20.0) as pool:
        spawn_worker(pool.endpoint, pool.token, "--name", "honest")
        start_rss = me.memory_info().rss
        peak = [start_rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], me.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        attacker = flood(pool.endpoint, 6.0)
        try:
            time.sleep(1.0)  # the flood is on before the search starts
            result = run_search(SleepEstimator(), space, X, cv=3, workers=pool, progress=False)
            sent = int(attacker.communicate(timeout=60)[0])
        finally:
            stop.set()
            sampler.join(30)
            if attacker.poll() is None:
                attacker.kill()
                attacker.communicate(timeout=30)
        assert pool.stats["dropped"] > 0 and pool.stats["dropped_over_budget"] > 0
    assert sent > 200 << 20  # hundreds of MiB thrown at the master
    growth = peak[0] - start_rss
    print(f"master growth {growth >> 20} MiB under a flood of {sent >> 20} MiB")
    assert growth < 150 << 20, f"the master grew {growth >> 20} MiB under the flood"
    np.testing.assert_array_equal(result.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])
