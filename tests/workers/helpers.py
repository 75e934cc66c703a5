"""Estimators, pickles and a rogue client shared by the worker tests.

Worker processes import this module by name (pickles refer to its classes), so it
holds no test code and has no side effects on import.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq
from sklearn.base import BaseEstimator

from hpsearch.workers.base import Results, TaskFinished
from hpsearch.workers.protocol import MASTER_TYPES, WORKER_TYPES, Codec, local_versions, parse_token


class SleepEstimator(BaseEstimator):
    """A deterministic model whose fit sleeps ``delay`` seconds (time.sleep frees the GIL)."""

    def __init__(self, c: float = 1.0, delay: float = 0.0) -> None:
        self.c = c
        self.delay = delay

    def fit(self, X: Any, y: Any = None) -> SleepEstimator:
        if self.delay:
            time.sleep(self.delay)
        self.offset_ = float(np.mean(X[:, 0]))
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return float(-((self.c - 3.0) ** 2) + self.offset_ - float(np.mean(X[:, 0])))


class MarkerPickle:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


class Rogue:
    """A test-only peer that crafts raw frames for the master's port."""

    def __init__(self, endpoint: str, secret: bytes) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.codec = Codec(secret, MASTER_TYPES)

    def send_raw(self, frames: list[Any]) -> None:
        self.sock.send_multipart(frames, copy=True)

    def message(self, kind: str, fields: dict[str, Any] | None = None, payload: tuple = ()) -> list[Any]:
        return self.codec.encode(kind, fields, payload)

    def hello(self, name: str = "rogue", versions: dict[str, str] | None = None,
              contexts: list[str] | None = None, nonce: str | None = None, slots: int = 1) -> list[Any]:
        return self.message("HELLO", {
            "worker_id": "rogue-" + name, "name": name, "host": "nowhere", "pid": 1, "slots": slots,
            "versions": versions or local_versions(), "contexts": contexts or [], "nonce": nonce,
        })

    def join(self, name: str = "rogue", **kwargs: Any) -> Any:
        """HELLO, the master's CHALLENGE, the bound HELLO; the WELCOME (None if none came)."""
        self.send_raw(self.hello(name, **kwargs))
        challenge = self.next("CHALLENGE")
        if challenge is None:
            return None
        self.send_raw(self.hello(name, nonce=challenge["nonce"], **kwargs))
        return self.next("WELCOME")

    def receive(self, timeout: float = 5.0) -> Any:
        """The next message from the master, decoded, or None after ``timeout`` s."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return self.codec.decode(self.sock.recv_multipart())

    def next(self, kind: str, timeout: float = 10.0) -> Any:
        """The next message of type ``kind`` (heartbeats skipped), or None after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is not None and msg.type == kind:
                return msg
        return None

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class FakeMaster:
    """A test-only master: one ROUTER socket talking to a real ``hpsearch-worker``."""

    def __init__(self, token: str) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.endpoint = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        self.codec = Codec(parse_token(token), WORKER_TYPES)  # signs with the token, reads workers
        self.route: bytes | None = None
        self.session: str | None = None  # the worker's, from its last message

    def next(self, kind: str, timeout: float = 30.0) -> Any:
        """The next message of type ``kind`` from the worker (others skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.router.poll(200):
                self.route, *frames = self.router.recv_multipart()
                msg = self.codec.decode(frames)
                self.session = msg.session
                if msg.type == kind:
                    return msg
        raise AssertionError(f"no {kind} from the worker within {timeout} s")

    def send(self, kind: str, fields: dict[str, Any], payload: Any = (), to: str | None = None) -> None:
        """Send to the worker, addressed to its current session unless ``to`` says otherwise."""
        assert self.route is not None, "the worker has not said anything yet"
        envelope = self.codec.encode(kind, fields, payload, to=to or self.session)
        self.router.send_multipart([self.route, *envelope])

    def welcome(self) -> Any:
        """HELLO, CHALLENGE, the HELLO bound to its nonce, WELCOME: that HELLO."""
        self.next("HELLO")
        self.send("CHALLENGE", {"nonce": "n" * 32})
        hello = self.next("HELLO")
        assert hello["nonce"] == "n" * 32
        self.send("WELCOME", {"name": hello["name"], "heartbeat": 1.0, "timeout": 30.0})
        return hello

    def close(self) -> None:
        self.router.close(linger=0)
        self.ctx.term()


def load_ridge_context(master: FakeMaster, search: int) -> str:
    """Start search ``search`` on ``master``'s worker with a small Ridge context; its id."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import get_scorer

    from hpsearch.evaluation import EvaluationContext

    X = np.random.default_rng(0).normal(size=(60, 3))
    context = EvaluationContext(Ridge(), X, X[:, 0], splits=[(np.arange(30), np.arange(30, 60))],
                                scorers={"score": get_scorer("r2")})
    return ship_context(master, search, context)


def ship_context(master: FakeMaster, search: int, context: Any) -> str:
    """Start search ``search`` on ``master``'s worker with ``context`` (one chunk); its id."""
    from hpsearch.serialization import content_id, dumps
    from hpsearch.workers import transfer

    frames = dumps(context)
    cid = content_id(frames)
    master.send("SEARCH", {"search": search, "context_id": cid, "nbytes": sum(len(f) for f in frames)})
    master.next("NEED")
    master.send("CONTEXT", {"search": search, "context_id": cid, "index": 0, "count": 1,
                            "sizes": [len(f) for f in frames]}, transfer.chunk_frames(frames)[0])
    assert master.next("READY")["error"] is None
    return cid


class Recording:
    """A pool wrapper that records every event its pool emits (a test's eyes on the wire)."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.events: list = []

    def start(self, context, emit) -> None:
        def record(event) -> None:
            self.events.append(event)
            emit(event)

        self.pool.start(context, record)

    def stop(self) -> None:
        self.pool.stop()

    def finished(self) -> list[TaskFinished]:
        """Every result, those reported together (``Results``) included."""
        out: list[TaskFinished] = []
        for e in self.events:
            if isinstance(e, Results):
                out += [r for r in e.events if isinstance(r, TaskFinished)]
            elif isinstance(e, TaskFinished):
                out.append(e)
        return out


def assert_same_scores(a, b) -> None:
    keys = [k for k in a.cv_results_ if "test_" in k and "time" not in k]
    assert keys
    for key in keys:
        np.testing.assert_array_equal(a.cv_results_[key], b.cv_results_[key], err_msg=key)
    assert a.cv_results_["params"] == b.cv_results_["params"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class WeightsEstimator(BaseEstimator):
    """A model whose param is a large array (its params do not fit in a TASK header)."""

    def __init__(self, weights: Any = None) -> None:
        self.weights = weights

    def fit(self, X: Any, y: Any = None) -> WeightsEstimator:
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return float(np.sum(self.weights) + np.mean(X[:, 0]))


class ThreadLogEstimator(BaseEstimator):
    """Logs the thread each fit runs on to the file ``log`` (one line a fit).

    The fit of candidate ``slow_c`` takes ``delay`` seconds, the first time only (a
    ``log + ".slow"`` file marks it): sleeping in 0.1 s steps, or with ``native`` in
    one call into C that releases the GIL (as BLAS does) and that no signal interrupts.
    """

    def __init__(self, c: float = 0.0, slow_c: float | None = None, delay: float = 0.0, log: str = "",
                 native: bool = False) -> None:
        self.c = c
        self.slow_c = slow_c
        self.delay = delay
        self.log = log
        self.native = native

    def fit(self, X: Any, y: Any = None) -> ThreadLogEstimator:
        import os
        import threading

        slow = self.c == self.slow_c and not os.path.exists(self.log + ".slow")
        if slow:
            pathlib.Path(self.log + ".slow").touch()
        with open(self.log, "a") as f:
            f.write(f"{self.c} {threading.current_thread().name} {'slow' if slow else 'fast'}\n")
        if slow and self.native:
            import hashlib

            start = time.perf_counter()
            hashlib.pbkdf2_hmac("sha256", b"k", b"s", 20_000)
            rate = 20_000 / (time.perf_counter() - start)
            hashlib.pbkdf2_hmac("sha256", b"k", b"s", int(rate * self.delay))
        elif slow:
            deadline = time.monotonic() + self.delay
            while time.monotonic() < deadline:
                time.sleep(0.1)
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return float(-((self.c - 3.0) ** 2) + np.mean(X[:, 0]))


def read_thread_log(path: Any) -> list[tuple[float, str, str]]:
    """The (c, thread name, "slow"/"fast") lines a :class:`ThreadLogEstimator` wrote."""
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(float(c), thread, kind) for c, thread, kind in (line.split() for line in lines)]


class CrashEstimator(BaseEstimator):
    """The fit of candidate ``crash_c`` kills its process (as a segfault would)."""

    def __init__(self, c: float = 0.0, crash_c: float | None = None, delay: float = 0.0) -> None:
        self.c = c
        self.crash_c = crash_c
        self.delay = delay

    def fit(self, X: Any, y: Any = None) -> CrashEstimator:
        if self.c == self.crash_c:
            import os

            os._exit(1)
        if self.delay:
            import time

            time.sleep(self.delay)
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return float(-((self.c - 3.0) ** 2) + np.mean(X[:, 0]))


def start_script(code: str) -> Any:
    """``python -c code`` with this process's import path; read its output with
    :func:`read_line` (a reader thread, so that a wait on the pipe can time out)."""
    import queue
    import subprocess
    import sys
    import threading

    from hpsearch.workers.local import child_environment

    proc = subprocess.Popen([sys.executable, "-c", code], env=child_environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc.lines = queue.SimpleQueue()
    threading.Thread(target=lambda: [proc.lines.put(line.strip()) for line in proc.stdout], daemon=True).start()
    return proc


def read_line(proc: Any, timeout: float = 120.0) -> str:
    """The next line a :func:`start_script` process prints, or an AssertionError after
    ``timeout`` s (the process is killed)."""
    import queue

    try:
        line = proc.lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if not line:
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"the process printed nothing within {timeout:g} s")
    return line


class CheckedEstimator(BaseEstimator):
    """Checks ``alpha`` in ``set_params`` (as a property setter or a custom estimator may)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def set_params(self, **params: Any) -> CheckedEstimator:
        if params.get("alpha", 0.0) < 0:
            raise ValueError(f"alpha must be >= 0, got {params['alpha']}")
        return super().set_params(**params)

    def fit(self, X: Any, y: Any = None) -> CheckedEstimator:
        self.offset_ = float(np.mean(X[:, 0]))
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return float(-self.alpha + self.offset_ - float(np.mean(X[:, 0])))


def pid_then_sleep(marker: str, delay: float, value: Any) -> tuple[int, Any]:
    """A call that notes its process id in ``marker`` (appending), sleeps, returns (pid, value)."""
    import os

    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(delay)
    return os.getpid(), value


def spin_pid(seconds: float) -> int:
    """Pure Python holding the GIL for ``seconds`` of CPU; returns the process id."""
    import os

    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(200))
    return os.getpid()
