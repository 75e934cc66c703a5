"""A search under a flood from a peer without the token: master memory and search time.

    python benchmarks/bench_hostile.py [--seconds 15] [--repeat 3] [--encrypt]

Runs the same search (``LocalProcesses(2)``, 40 candidates x 3 folds of 50 ms sleeps)
undisturbed and under attack, alternating, and prints medians: the search time ratio
(target: within 2x of undisturbed) and the master's peak RSS above its start, sampled
every 10 ms (target: under 200 MB). The attacker is another process, without the token,
that for ``--seconds`` sends on one new connection after another: 1 MiB junk
envelopes ("HPS\\x01B" + random bytes), messages of 100 frames of 2 MiB (200 MiB each,
every frame within MAXMSGSIZE), and frames above MAXMSGSIZE. ``--encrypt`` runs the pool
with CurveZMQ (only the token's worker key completes a handshake).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
from sklearn.base import BaseEstimator

from hpsearch import LocalProcesses, run_search

FLOOD = r"""
import os, sys, time, zmq
endpoint, seconds, frames = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ctx = zmq.Context()
junk = os.urandom(1 << 20)
big = os.urandom(2 << 20)
sent = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = 100
    sock.connect(endpoint)
    try:
        for _ in range(50):
            sock.send(b"HPS\x01B" + junk, zmq.NOBLOCK)
            sent += len(junk)
        sock.send_multipart([big] * frames, zmq.NOBLOCK)
        sent += frames * len(big)
        sock.send(big + big, zmq.NOBLOCK)
        sent += 2 * len(big)
    except zmq.Again:
        pass
    time.sleep(0.05)
    sock.close(linger=0)
print(sent)
"""


class Sleep(BaseEstimator):
    def __init__(self, c: float = 0.0, delay: float = 0.05) -> None:
        self.c = c
        self.delay = delay

    def fit(self, X, y=None):
        time.sleep(self.delay)
        return self

    def score(self, X, y=None):
        return -abs(self.c - 3.0)


def one_search(attack: bool, seconds: float, frames: int, encrypt: bool) -> tuple[float, int, int]:
    """Seconds of the search, master peak RSS above its start, bytes the attacker sent."""
    X = np.random.default_rng(0).normal(size=(60, 4))
    space = {"c": [float(c) for c in range(40)]}
    me = psutil.Process()
    with LocalProcesses(2, encrypt=encrypt) as pool:
        start_rss = me.memory_info().rss
        peak = [start_rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], me.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        attacker = None
        if attack:
            attacker = subprocess.Popen([sys.executable, "-c", FLOOD, str(pool.endpoint), str(seconds), str(frames)],
                                        stdout=subprocess.PIPE)
            time.sleep(1.0)  # the flood is on before the search starts
        try:
            begin = time.perf_counter()
            run_search(Sleep(), space, X, cv=3, workers=pool, progress=False)
            elapsed = time.perf_counter() - begin
            sent = int(attacker.communicate(timeout=seconds + 60)[0]) if attacker is not None else 0
        finally:
            stop.set()
            sampler.join()
            if attacker is not None and attacker.poll() is None:
                attacker.kill()
                attacker.communicate()
    return elapsed, peak[0] - start_rss, sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the attacker floods")
    parser.add_argument("--frames", type=int, default=100, help="frames of 2 MiB per multipart message")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--encrypt", action="store_true")
    args = parser.parse_args()
    calm, hostile = [], []
    for _ in range(args.repeat):
        calm.append(one_search(False, args.seconds, args.frames, args.encrypt))
        hostile.append(one_search(True, args.seconds, args.frames, args.encrypt))
    t_calm = float(np.median([r[0] for r in calm]))
    t_hostile = float(np.median([r[0] for r in hostile]))
    peak = max(r[1] for r in hostile)
    sent = float(np.median([r[2] for r in hostile]))
    print(f"encrypt={args.encrypt}, median of {args.repeat}: undisturbed {t_calm:.2f} s, "
          f"under a flood of {sent / 1e9:.1f} GB {t_hostile:.2f} s = {t_hostile / t_calm:.2f}x (target <= 2x); "
          f"master peak {peak / 1e6:.0f} MB above its start (target < 200 MB; undisturbed "
          f"{max(r[1] for r in calm) / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
