"""``LocalProcesses``: N ``hpsearch-worker`` processes on this machine.

They connect over loopback TCP with a fresh token, exactly as remote workers do, so
every search run on them exercises the whole wire protocol. Use them for
pure-Python estimators whose fits hold the GIL (threads would take turns).
"""

from __future__ import annotations

import logging
import numbers
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from ..errors import InvalidParameterError, NoWorkersError
from .remote import RemoteWorkers
from .threads import available_cores

logger = logging.getLogger(__name__)

__all__ = ["LocalProcesses", "child_environment"]


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a local worker process: this one, with this process's import path.

    The child must import hpsearch (installed or not) and every module the master's
    pickles refer to by name, so it gets the master's ``sys.path`` as ``PYTHONPATH``.
    """
    import hpsearch

    paths = [os.path.dirname(os.path.dirname(os.path.abspath(hpsearch.__file__)))]
    paths += [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)]
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class LocalProcesses(RemoteWorkers):
    """A pool of ``n`` local worker processes speaking the remote protocol.

    Parameters
    ----------
    n : int
        Worker processes to start.
    slots_per_process : int
        Tasks each process runs at once.
    inner_threads : int, optional
        BLAS/OpenMP threads per fit; default ``max(1, cores // (n * slots_per_process))``.
    start_timeout : float
        Seconds for every process to start and join.
    heartbeat_timeout : float
        A process silent this long is lost (one that exits is lost at once).
    extra_args : list of str, optional
        More ``hpsearch-worker`` arguments (for tests).

    Examples
    --------
    >>> from hpsearch import LocalProcesses, run_search
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> with LocalProcesses(2) as pool:  # doctest: +SKIP
    ...     result = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 3]},
    ...                         X, y, workers=pool, progress=False)
    >>> result.best_params_  # doctest: +SKIP
    {'max_depth': 3}
    """

    _exit_on_close = True

    def __init__(
        self,
        n: int,
        slots_per_process: int = 1,
        *,
        inner_threads: int | None = None,
        start_timeout: float = 120.0,
        heartbeat: float = 1.0,
        heartbeat_timeout: float = 30.0,
        extra_args: list[str] | None = None,
        encrypt: bool = False,
    ) -> None:
        for name, value in (("n", n), ("slots_per_process", slots_per_process)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}")
        super().__init__("tcp://127.0.0.1:*", min_workers=int(n), join_timeout=start_timeout,
                         heartbeat=heartbeat, heartbeat_timeout=heartbeat_timeout, encrypt=encrypt)
        self.n = int(n)
        self.slots_per_process = int(slots_per_process)
        self.inner_threads = inner_threads or max(1, available_cores() // (self.n * self.slots_per_process))
        self.extra_args = list(extra_args or [])
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def open(self) -> LocalProcesses:
        """Bind, spawn the processes and wait until every one has said HELLO."""
        if self._thread is not None:
            return self
        super().open()
        try:
            self._spawn()
            self._wait_joined()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self) -> None:
        env = child_environment(HPSEARCH_TOKEN=self.token)
        threads = str(self.inner_threads)
        port = str(self.endpoint).rsplit(":", 1)[-1]
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = threads
        for i in range(self.n):
            log = tempfile.TemporaryFile()
            command = [
                sys.executable, "-m", "hpsearch.worker_cli",
                "--connect", str(self.endpoint), "--slots", str(self.slots_per_process),
                # The port keeps names unique when several pools serve one search.
                "--name", f"local-{port}-{i}", "--inner-threads", threads,
                "--heartbeat", str(self.heartbeat), "--log-level", "WARNING",
                "--parent-pid", str(os.getpid()),  # a master killed outright leaves no worker behind
                *self.extra_args,
            ]
            self._logs.append(log)
            self.processes.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                                   stdout=log, stderr=subprocess.STDOUT))

    def _wait_joined(self) -> None:
        deadline = time.monotonic() + self.join_timeout
        while self.stats["hellos"] < self.n:
            exited = [p for p in self.processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                what = (f"worker process {exited[0].pid} exited with code {exited[0].returncode}"
                        if exited else f"only {self.stats['hellos']} of {self.n} joined within {self.join_timeout:g} s")
                raise NoWorkersError(f"LocalProcesses({self.n}): {what}.{self._no_workers_hint()}")
            time.sleep(0.05)

    def _no_workers_hint(self) -> str:
        tails = []
        for proc, log in zip(self.processes, self._logs):
            try:
                log.seek(0)
                text = log.read()[-2000:].decode(errors="replace").strip()
            except (OSError, ValueError):
                continue
            if text:
                tails.append(f"--- worker pid {proc.pid} (exit code {proc.poll()}):\n{text}")
        return ("\n" + "\n".join(tails)) if tails else ""

    def _dead_pids(self) -> set[int]:
        return {p.pid for p in self.processes if p.poll() is not None}

    def close(self) -> None:
        """Tell the processes to exit, then terminate or kill any that do not; reap all."""
        super().close()  # sends SHUTDOWN
        # One shared grace period, then SIGTERM (a worker says BYE and exits 0), then SIGKILL.
        for action, grace in ((None, 2.0), ("terminate", 3.0), ("kill", 5.0)):
            alive = [p for p in self.processes if p.poll() is None]
            if not alive:
                break
            if action is not None:
                for proc in alive:
                    getattr(proc, action)()
            deadline = time.monotonic() + grace
            for proc in alive:
                try:
                    proc.wait(max(0.01, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for log in self._logs:
            log.close()
        self.processes = []
        self._logs = []

    def __repr__(self) -> str:
        return f"LocalProcesses({self.n}, slots_per_process={self.slots_per_process})"
