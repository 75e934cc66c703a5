"""A joblib backend named ``"hpsearch"``: scikit-learn's own ``n_jobs`` on hpsearch workers.

Inside ``joblib.parallel_config(backend="hpsearch", workers=pool)``, every
``joblib.Parallel`` call — ``GridSearchCV(n_jobs=-1)``, ``cross_validate``,
``permutation_importance``, ``RandomForestClassifier(n_jobs=-1)`` — sends its batches
to the pool:

* :class:`~hpsearch.DaskWorkers`: each batch runs on the least busy Dask worker. The
  batch is serialized by :func:`hpsearch.serialization.dumps`; its large arrays travel
  as out-of-band buffers named by their content, cached on each worker, so an ``X``
  used by many calls (three ``cross_val_score`` on the same data) reaches each worker
  once. A worker lost during a batch is replaced by another.
* :class:`~hpsearch.LocalProcesses` and :class:`~hpsearch.RemoteWorkers`: each batch
  is one CALL of the ZeroMQ protocol, run on the least busy worker's slot, its large
  arrays content-addressed and cached on the worker in the same way
  (:mod:`hpsearch.workers.calls`). The result is a pickle the master unpickles, so a
  ``RemoteWorkers`` pool must be created with ``trust_workers=True`` (anyone holding
  its token could otherwise run code on the master); ``LocalProcesses`` always trusts
  its own children.
* a number N, as ``run_search(workers=N)`` reads it (:class:`~hpsearch.AutoWorkers`):
  the batches of each ``Parallel`` call start on N local threads and are measured; when
  they take turns on the GIL (and the move pays), the later batches go to this
  process's N warm worker processes (:func:`~hpsearch.warm_processes`). One is a thread.
  Without ``workers``, N is the ``Parallel`` call's ``n_jobs`` (-1: every core).
* :class:`~hpsearch.ThreadWorkers`: always threads; ``warm_processes(N)``: always the
  warm processes, taken for each ``Parallel`` call and given back after it.

A list of pools, which a search accepts, is refused: joblib sends its batches to one.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import numbers
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Union

import joblib
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, SequentialBackend
from joblib._utils import _retrieve_traceback_capturing_wrapped_call, _TracebackCapturingWrapper

from .errors import InvalidParameterError
from .workers.auto import ParallelProbe, TaskTiming, _probe_switch_interval, run_timed
from .workers.local import LocalProcesses, WarmProcesses, warm_pool_ready
from .workers.threads import ThreadWorkers, available_cores

logger = logging.getLogger(__name__)

__all__ = ["BACKEND_NAME", "HPSearchBackend", "register"]

BACKEND_NAME = "hpsearch"


class _ThreadRunner:
    """Batches on ``n`` local threads."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def open(self) -> None:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(self.n, thread_name_prefix="hpsearch-joblib")

    def threads(self) -> int:
        return self.n

    def submit(self, func: Any) -> concurrent.futures.Future:
        assert self._executor is not None
        return self._executor.submit(func)

    def abort(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class _PoolRunner:
    """Batches on an hpsearch pool that runs calls (``DaskWorkers``: Dask tasks;
    ``RemoteWorkers``, ``LocalProcesses``: CALL messages), opened here if it is not
    (and then closed here)."""

    def __init__(self, pool: Any, is_open: Callable[[], bool], threads: Callable[[], int]) -> None:
        self.pool = pool
        self._is_open = is_open
        self.threads = threads
        self._opened = False

    def open(self) -> None:
        if not self._is_open():
            self.pool.open()
            self._opened = True

    def submit(self, func: Any) -> concurrent.futures.Future:
        return self.pool.submit_call(func)

    def abort(self) -> None:
        """Calls already sent run to the end; joblib ignores their results."""

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self.pool.close()


class _AutoRunner:
    """``workers=N`` as ``run_search`` means it (:class:`~hpsearch.AutoWorkers`): the
    batches of a ``Parallel`` call start on N threads and are measured
    (:class:`~hpsearch.workers.auto.ParallelProbe`); when they show the threads taking
    turns on the GIL, and the move pays, N warm local processes are taken (started in the
    background if they are not running) and the batches dispatched from then on run
    there. Batches already on threads finish there."""

    def __init__(self, n: int, start_seconds: float = 2.0) -> None:
        self.n = n
        self.start_seconds = start_seconds
        self.moved = False  # whether the last Parallel call moved to processes
        self.last_verdict: str | None = None  # the probe's verdict on the last call, if it gave one
        self._threads = _ThreadRunner(n)
        self._lock = threading.Lock()
        self._probe: ParallelProbe | None = None
        self._switching = False
        self._mover: threading.Thread | None = None
        self._warm: WarmProcesses | None = None
        self._processes: LocalProcesses | None = None  # set once they run the batches
        self._closing = False

    def open(self) -> None:
        self._threads.open()

    def measure(self, n_jobs: int) -> None:
        """Start measuring a ``Parallel`` call that runs ``n_jobs`` batches at once
        (fewer than N threads busy is no sign of the GIL)."""
        with self._lock:
            if self._probe is not None:
                return
            self.moved = self._closing = False
            self._probe = ParallelProbe(max(1, min(self.n, n_jobs)), start=time.perf_counter(),
                                        warm=warm_pool_ready(self.n), start_seconds=self.start_seconds)
            self._switching = not self._probe.decided
            if self._switching:
                _probe_switch_interval(True)

    def threads(self) -> int:
        return self.n

    def submit(self, func: Any) -> concurrent.futures.Future:
        processes = self._processes
        if processes is not None:
            return processes.submit_call(func)
        probe = self._probe
        if probe is not None and not probe.decided:
            return self._threads.submit(functools.partial(self._measured, func))
        return self._threads.submit(func)

    def _measured(self, func: Any) -> Any:
        return run_timed(func, self._record)

    def _record(self, timing: TaskTiming) -> None:
        with self._lock:
            if self._probe is None or self._closing:
                return
            move = self._probe.record(timing)
            if self._switching and self._probe.verdict is not None:
                self._switching = False
                _probe_switch_interval(False)
            if move:
                self._mover = threading.Thread(target=self._move, name="hpsearch-joblib-move", daemon=True)
                self._mover.start()

    def _move(self) -> None:
        warm = WarmProcesses(self.n)
        try:
            processes = warm.open()
            processes.total_slots()  # the batches go there once a process has joined
        except Exception:
            logger.warning("could not start local worker processes; the batches stay on threads", exc_info=True)
            warm.stop()
            return
        with self._lock:
            if self._closing:
                warm.stop()
                return
            self._warm, self._processes, self.moved = warm, processes, True
        logger.info("joblib batches move to %d local worker processes (the threads took turns on the GIL)",
                    self.n)

    def abort(self) -> None:
        self._threads.abort()  # calls already sent to processes run to the end

    def close(self) -> None:
        with self._lock:
            self._closing = True
            mover, self._mover = self._mover, None
            if self._switching:
                self._switching = False
                _probe_switch_interval(False)
        if mover is not None:
            mover.join(300.0)
        self._threads.close()
        with self._lock:
            if self._probe is not None:
                self.last_verdict = self._probe.verdict
            warm, self._warm, self._processes, self._probe = self._warm, None, None, None
        if warm is not None:
            warm.stop()  # the warm pool stays up for later searches and calls


class _WarmRunner(_PoolRunner):
    """Batches on the warm local processes (``warm_processes(N)``), taken for the
    ``Parallel`` call and given back after it."""

    def __init__(self, warm: WarmProcesses) -> None:
        super().__init__(warm, lambda: warm.pool is not None, lambda: self._slots())
        self.warm = warm

    def _slots(self) -> int:
        assert self.warm.pool is not None
        return self.warm.pool.total_slots()

    def open(self) -> None:
        if self.warm.pool is None:
            self.warm.open()

    def submit(self, func: Any) -> concurrent.futures.Future:
        assert self.warm.pool is not None
        return self.warm.pool.submit_call(func)

    def close(self) -> None:
        self.warm.stop()


_Runner = Union[_ThreadRunner, _PoolRunner, _AutoRunner]

_ACCEPTED = (
    "a number of local workers (int >= 1: threads, moved to processes when the batches take turns on the "
    "GIL, as run_search(workers=N)), AutoWorkers, ThreadWorkers, warm_processes(N), LocalProcesses, "
    "RemoteWorkers(trust_workers=True) or DaskWorkers"
)


def _runner(workers: Any) -> _Runner:
    """The runner for ``workers``, read as ``run_search(workers=...)`` reads it."""
    from .workers.auto import AutoWorkers
    from .workers.remote import RemoteWorkers

    dask_module = sys.modules.get("hpsearch.workers.dask")  # not imported: workers is no DaskWorkers

    if isinstance(workers, numbers.Integral) and not isinstance(workers, bool):
        if workers < 1:
            raise InvalidParameterError(
                f"parallel_config(backend='hpsearch', workers={workers!r}): workers must be >= 1. Give "
                + _ACCEPTED
            )
        n = int(workers)
        return _ThreadRunner(1) if n == 1 else _AutoRunner(n)  # as run_search's local_workers
    if isinstance(workers, AutoWorkers):
        return _ThreadRunner(1) if workers.n == 1 else _AutoRunner(workers.n, workers.start_seconds)
    if isinstance(workers, ThreadWorkers):
        return _ThreadRunner(workers.n)
    if isinstance(workers, WarmProcesses):
        return _WarmRunner(workers)
    if dask_module is not None and isinstance(workers, dask_module.DaskWorkers):
        return _PoolRunner(workers, lambda: workers.client is not None, workers.total_threads)
    if isinstance(workers, RemoteWorkers):  # LocalProcesses too: it trusts its own children
        if not workers.trust_workers:
            raise InvalidParameterError(
                f"parallel_config(backend='hpsearch', workers={workers!r}): joblib calls return Python "
                "objects, which this process would unpickle, so anyone holding the pool's join token could "
                "run code here. If every worker is yours, create the pool with "
                "RemoteWorkers(..., trust_workers=True)"
            )
        return _PoolRunner(workers, lambda: workers._thread is not None, workers.total_slots)
    if isinstance(workers, (list, tuple)):
        raise InvalidParameterError(
            f"parallel_config(backend='hpsearch', workers={workers!r}): joblib sends its batches to one "
            "pool; a list of pools serves searches only (run_search, the search classes). Give one: "
            + _ACCEPTED
        )
    raise InvalidParameterError(
        "parallel_config(backend='hpsearch') needs workers= " + _ACCEPTED + f"; got {workers!r}"
    )


class HPSearchBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib backend running ``Parallel`` batches on hpsearch workers.

    Parameters
    ----------
    workers : int, AutoWorkers, ThreadWorkers, WarmProcesses, LocalProcesses, RemoteWorkers, DaskWorkers or None
        Where the batches run, read as ``run_search(workers=...)`` reads it: an int N
        is N local workers, threads moved to the warm processes when the batches take
        turns on the GIL; None is the ``Parallel`` call's ``n_jobs`` such workers. A
        pool that is not open is opened for each ``Parallel`` call and closed after
        it; open it once (``with pool:``) to keep the data cached on the workers
        between calls. A ``RemoteWorkers`` pool must trust its workers
        (``trust_workers=True``).

    Examples
    --------
    >>> import joblib
    >>> import hpsearch  # registers the backend
    >>> from math import sqrt
    >>> with joblib.parallel_config(backend="hpsearch", workers=2):
    ...     joblib.Parallel(n_jobs=-1)(joblib.delayed(sqrt)(i * i) for i in range(4))
    [0.0, 1.0, 2.0, 3.0]
    """

    supports_retrieve_callback = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = -1
    MIN_IDEAL_BATCH_DURATION = 0.2
    MAX_IDEAL_BATCH_DURATION = 1.0

    def __init__(self, workers: Any = None, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **backend_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads,
                         **backend_kwargs)
        self.workers = workers
        # workers=None: n_jobs local workers, made per Parallel call (as run_search's None)
        self._runner: _Runner | None = None if workers is None else _runner(workers)
        self._local_n = 0

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if self.workers is None:
            # run_search(workers=None): the n_jobs of the Parallel call, as local workers
            cores = available_cores()
            wanted = -1 if n_jobs is None else n_jobs  # None: this backend's default, every core
            n = max(1, min(cores + 1 + wanted if wanted < 0 else wanted, 4 * cores))
            if self._runner is None or n != self._local_n:
                if self._runner is not None:
                    self._runner.close()
                self._runner, self._local_n = _runner(n), n
        assert self._runner is not None
        self._runner.open()
        total = self._runner.threads()
        if n_jobs is None or n_jobs < 0:
            return max(1, total + 1 + n_jobs) if n_jobs is not None and n_jobs < -1 else max(1, total)
        return int(n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        self.parallel = parallel
        n = self.effective_n_jobs(n_jobs)
        if isinstance(self._runner, _AutoRunner):
            self._runner.measure(n)
        return n

    def submit(self, func: Any, callback: Any = None) -> concurrent.futures.Future:
        assert self._runner is not None, "configure comes first"
        future = self._runner.submit(_TracebackCapturingWrapper(func))
        future.get = future.result  # type: ignore[attr-defined]  # joblib's AsyncResult API
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: concurrent.futures.Future) -> Any:
        return _retrieve_traceback_capturing_wrapped_call(out.result())

    def abort_everything(self, ensure_ready: bool = True) -> None:
        if self._runner is not None:
            self._runner.abort()
            if ensure_ready:
                self._runner.open()

    def terminate(self) -> None:
        if self._runner is not None:
            self._runner.close()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        # A batch already runs on one of the pool's threads: nested Parallel calls
        # (a forest inside a search) run sequentially there instead of oversubscribing.
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    def __reduce__(self) -> tuple[Any, ...]:
        return (SequentialBackend, ())


def register() -> None:
    """Register the ``"hpsearch"`` backend with joblib (done when hpsearch is imported)."""
    joblib.register_parallel_backend(BACKEND_NAME, HPSearchBackend)


register()
