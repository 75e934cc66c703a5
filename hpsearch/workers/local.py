"""``LocalProcesses``: N ``hpsearch-worker`` processes on this machine.

They connect over loopback TCP with a fresh token, exactly as remote workers do, so
every search run on them exercises the whole wire protocol. Use them for
pure-Python estimators whose fits hold the GIL (threads would take turns).

The pool supervises its processes: one that dies (a fit that segfaults, the OOM
killer, a stray ``kill``) is replaced, with a backoff when they keep dying before
they join (:class:`~hpsearch.workers.supervisor.Supervisor` decides; the I/O
thread's housekeeping spawns). A task past its time limit is stopped by killing
its process.
"""

from __future__ import annotations

import atexit
import collections
import logging
import numbers
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from ..errors import InvalidParameterError, NoWorkersError
from .base import PoolFailed, Task
from .remote import RemoteWorkers
from .supervisor import Supervisor
from .threads import available_cores

logger = logging.getLogger(__name__)

__all__ = [
    "LocalProcesses",
    "WarmProcesses",
    "child_environment",
    "close_warm_processes",
    "warm_pool_ready",
    "warm_processes",
]


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
        Seconds for every process to start and join (processes that die meanwhile
        are replaced).
    heartbeat_timeout : float
        A process silent this long is lost (one that exits is lost at once, and
        replaced).
    extra_args : list of str, optional
        More ``hpsearch-worker`` arguments (for tests).
    shared_memory : bool
        The processes map the context's large arrays (1 MB and more) from one
        read-only copy in shared memory, as joblib's memmapping does for loky,
        instead of each receiving a copy (see :mod:`hpsearch.workers.shared`); the
        copy goes when the pool is closed or a newer context replaces it. False:
        every process receives the whole context.

    Notes
    -----
    A process that dies is replaced at once; when they keep dying before they
    join, each replacement waits twice as long as the last, from 0.25 s up to
    10 s. A task that kills the process running it is retried elsewhere and fails
    as data after ``run_search``'s ``max_task_deaths``; the pool stays full. A
    process that exits with an error before joining 3 times in a row (a broken
    environment) fails the pool, showing its output.

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
        shared_memory: bool = True,
    ) -> None:
        for name, value in (("n", n), ("slots_per_process", slots_per_process)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}")
        super().__init__("tcp://127.0.0.1:*", min_workers=int(n), join_timeout=start_timeout,
                         heartbeat=heartbeat, heartbeat_timeout=heartbeat_timeout, encrypt=encrypt,
                         shared_memory=shared_memory,
                         trust_workers=True)  # its own children: joblib calls may run on them
        self.n = int(n)
        self.slots_per_process = int(slots_per_process)
        self.inner_threads = inner_threads or max(1, available_cores() // (self.n * self.slots_per_process))
        self.extra_args = list(extra_args or [])
        self.processes: list[subprocess.Popen[bytes]] = []  # slot -> its current process
        self._logs: list[Any] = []
        self._dead: collections.deque[tuple[int, int | None, str]] = collections.deque(maxlen=4)
        self._exited: collections.deque[int] = collections.deque(maxlen=1024)  # pids, newest last
        self._stopped: set[int] = set()  # pids this pool killed on purpose
        self._handled: set[subprocess.Popen[bytes]] = set()  # exited, seen by the supervisor
        self._procs_lock = threading.Lock()  # the process table: the caller's and the I/O thread
        self._supervisor = Supervisor(self.n)
        self._failure_reported = False

    def open(self) -> LocalProcesses:
        """Bind, spawn the processes and wait until every one has said HELLO."""
        if self._thread is not None:
            return self
        self._supervisor = Supervisor(self.n)
        self._failure_reported = False
        self.processes = []
        self._logs = []
        self._handled = set()
        super().open()
        try:
            self._supervise(time.monotonic())
            self._wait_joined()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, slot: int, now: float) -> None:
        env = child_environment(HPSEARCH_TOKEN=self.token)
        threads = str(self.inner_threads)
        port = str(self.endpoint).rsplit(":", 1)[-1]
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = threads
        log = tempfile.TemporaryFile()
        command = [
            sys.executable, "-m", "hpsearch.worker_cli",
            "--connect", str(self.endpoint), "--slots", str(self.slots_per_process),
            # The port keeps names unique when several pools serve one search.
            "--name", f"local-{port}-{slot}", "--inner-threads", threads,
            "--heartbeat", str(self.heartbeat), "--log-level", "WARNING",
            "--parent-pid", str(os.getpid()),  # a master killed outright leaves no worker behind
            *self.extra_args,
        ]
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if proc.pid in self._exited:  # a pid used again: this process is alive
            self._exited.remove(proc.pid)
        if slot < len(self.processes):
            self.processes[slot], self._logs[slot] = proc, log
            self.stats["restarts"] += 1
        else:
            self.processes.append(proc)
            self._logs.append(log)
        self._supervisor.started(slot, proc.pid, now)

    def _supervise(self, now: float) -> None:
        """Note joins and exits, and start the processes the supervisor says are due."""
        with self._procs_lock:
            if self._loop is None:
                return
            joined = {peer.pid for peer in list(self._table.peers.values())}
            for pid in joined:
                self._supervisor.joined(pid)
            for slot, proc in enumerate(self.processes):
                code = proc.poll()
                if code is None or proc in self._handled:
                    continue
                self._handled.add(proc)  # until it is replaced
                self._exited.append(proc.pid)
                stopped = proc.pid in self._stopped
                self._stopped.discard(proc.pid)
                self._dead.append((proc.pid, code, self._log_tail(self._logs[slot])))
                self._supervisor.exited(proc.pid, code, now, stopped=stopped)
                if not stopped:
                    logger.warning("worker process %d (slot %d) exited with code %s; it will be replaced",
                                   proc.pid, slot, code)
            for slot in self._supervisor.due(now):
                if slot < len(self._logs):
                    self._logs[slot].close()
                    self._handled.discard(self.processes[slot])
                self._spawn(slot, now)
            failure = self._supervisor.failure
        loop = self._loop
        if failure is not None and not self._failure_reported and loop is not None and loop.searching:
            self._failure_reported = True
            loop.emit(PoolFailed(NoWorkersError(f"{self!r}: {failure}.{self._no_workers_hint()}")))

    def _housekeeping(self, now: float) -> None:
        """On the I/O thread: note exits and joins, and replace dead processes."""
        self._supervise(now)

    def _abandon(self, session: str, task: Task) -> bool:
        """Stop the process running ``task``: kill it (the supervisor replaces it)."""
        peer = self._table.peers.get(session)
        if peer is None:
            return False
        with self._procs_lock:
            proc = next((p for p in self.processes if p.pid == peer.pid and p.poll() is None), None)
            if proc is None:
                return False
            self._stopped.add(proc.pid)
            logger.warning("stopping worker process %d (%s) to abandon task %d", proc.pid, peer.name, task.task_id)
            proc.send_signal(signal.SIGKILL)
        return False

    def _ready_to_start(self, joined: int) -> bool:
        # Every process, or (some being replaced) every one connected now: a search
        # does not wait for processes that are still starting.
        return joined >= self.min_workers or 1 <= self.n_workers <= joined

    def _join_advice(self) -> str:
        alive = sum(p.poll() is None for p in list(self.processes))
        return f"{alive} of its {self.n} worker processes are running; each one that dies is replaced"

    def _wait_joined(self) -> None:
        deadline = time.monotonic() + self.join_timeout
        while self.n_workers < self.n:
            failure = self._supervisor.failure
            if failure is not None or time.monotonic() > deadline:
                what = failure or f"only {self.n_workers} of {self.n} joined within {self.join_timeout:g} s"
                raise NoWorkersError(f"LocalProcesses({self.n}): {what}.{self._no_workers_hint()}")
            time.sleep(0.05)

    @staticmethod
    def _log_tail(log: Any) -> str:
        try:
            log.seek(0)
            return str(log.read()[-2000:].decode(errors="replace").strip())
        except (OSError, ValueError):
            return ""

    def _no_workers_hint(self) -> str:
        tails = []
        shown = set()
        for pid, code, text in list(self._dead):
            shown.add(pid)
            if text:
                tails.append(f"--- worker pid {pid} (exit code {code}):\n{text}")
        for proc, log in zip(list(self.processes), list(self._logs)):
            text = self._log_tail(log) if proc.pid not in shown else ""
            if text:
                tails.append(f"--- worker pid {proc.pid} (exit code {proc.poll()}):\n{text}")
        return ("\n" + "\n".join(tails)) if tails else ""

    def _dead_pids(self) -> set[int]:
        return set(self._exited)

    def close(self) -> None:
        """Tell the processes to exit, then terminate or kill any that do not; reap all."""
        super().close()  # sends SHUTDOWN; the I/O thread, which replaces processes, is gone
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


# The warm pools of this process, by (processes, slots per process): started at the
# first search that asks for one and reused by every later search (as loky's reusable
# executor is), so a second search pays no start-up. Their processes exit with this
# one (``--parent-pid``, and ``atexit`` closes them cleanly first).
_WARM: dict[tuple[int, int], LocalProcesses] = {}
_WARM_BUSY: set[int] = set()
_WARM_LOCK = threading.Lock()


class WarmProcesses:
    """One search's use of this process's warm pool of local worker processes.

    ``start`` takes the warm pool of ``n`` processes (started at the first search that
    asks for it, replaced if one of its processes exited); ``stop`` ends the search's
    use of it without closing it. While another search uses the warm pool, a search
    gets processes of its own, started for it and closed after it. ``open`` takes
    them in the same way for calls with no search (the joblib backend). Made by
    :func:`warm_processes`.
    """

    def __init__(self, n: int, slots_per_process: int = 1) -> None:
        for name, value in (("n", n), ("slots_per_process", slots_per_process)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}")
        self.n = int(n)
        self.slots_per_process = int(slots_per_process)
        self.pool: LocalProcesses | None = None
        self._warm = False
        self._close_on_stop = False  # processes of its own, opened for calls

    def start(self, context: Any, emit: Any) -> None:
        pool = self._take()
        try:
            pool.start(context, emit)
        except BaseException:
            self._release()
            raise

    def open(self) -> LocalProcesses:
        """Take the processes for calls (the joblib backend), with no search: the warm
        pool when it is free, else processes of their own; ``stop`` gives them back."""
        pool = self._take()
        if not self._warm:
            try:
                pool.open()
            except BaseException:
                self._release()
                raise
            self._close_on_stop = True
        return pool

    def _take(self) -> LocalProcesses:
        key = (self.n, self.slots_per_process)
        with _WARM_LOCK:
            pool = _WARM.get(key)
            if pool is not None and id(pool) in _WARM_BUSY:
                pool, self._warm = LocalProcesses(*key), False  # opened by its start, closed by its stop
            else:
                if pool is not None and (pool._thread is None or pool._dead_pids()):
                    logger.info("replacing the warm %r: one of its processes exited", pool)
                    del _WARM[key]
                    pool.close()
                    pool = None
                if pool is None:
                    pool = LocalProcesses(*key).open()
                    _WARM[key] = pool
                _WARM_BUSY.add(id(pool))
                self._warm = True
        self.pool = pool
        return pool

    def stop(self) -> None:
        if self.pool is None:
            return
        try:
            self.pool.stop()
            if self._close_on_stop:
                self.pool.close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._warm and self.pool is not None:
            with _WARM_LOCK:
                _WARM_BUSY.discard(id(self.pool))
        self.pool = None
        self._warm = self._close_on_stop = False

    def __repr__(self) -> str:
        return f"warm_processes({self.n}, slots_per_process={self.slots_per_process})"


def warm_processes(n: int, slots_per_process: int = 1) -> WarmProcesses:
    """A pool of ``n`` local worker processes kept warm for every search of this process.

    The first search given it starts the processes; later searches reuse the same
    processes (as loky's reusable executor does), which also keep the latest contexts
    in their cache: a search pays neither the start-up nor, when its data were already
    sent, the transfer. A pool with a dead process is replaced at the next search. The
    processes exit with this process.

    Parameters
    ----------
    n : int
        Worker processes.
    slots_per_process : int
        Tasks each process runs at once.

    Returns
    -------
    WarmProcesses
        A pool to give as ``run_search(workers=...)``.

    Examples
    --------
    >>> from hpsearch import run_search, warm_processes
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> result = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 3]},
    ...                     X, y, workers=warm_processes(2), progress=False)  # doctest: +SKIP
    >>> result.best_params_  # doctest: +SKIP
    {'max_depth': 3}
    """
    return WarmProcesses(n, slots_per_process)


def warm_pool_ready(n: int, slots_per_process: int = 1) -> bool:
    """Whether a search would find the warm pool of ``n`` processes running and free.

    Examples
    --------
    >>> warm_pool_ready(3)  # no search of this process has started one of 3
    False
    """
    with _WARM_LOCK:
        pool = _WARM.get((n, slots_per_process))
        return (pool is not None and id(pool) not in _WARM_BUSY and pool._thread is not None
                and not pool._dead_pids())


def close_warm_processes() -> None:
    """Close every warm pool of this process (done at exit; a later search starts new ones)."""
    with _WARM_LOCK:
        pools = list(_WARM.values())
        _WARM.clear()
        _WARM_BUSY.clear()
    for pool in pools:
        pool.close()


atexit.register(close_warm_processes)
