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
* a number of threads, or :class:`~hpsearch.ThreadWorkers`: batches run on that many
  local threads.
"""

from __future__ import annotations

import concurrent.futures
import logging
import numbers
from collections.abc import Callable
from typing import Any

import joblib
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, SequentialBackend
from joblib._utils import _retrieve_traceback_capturing_wrapped_call, _TracebackCapturingWrapper

from .errors import InvalidParameterError
from .workers.threads import ThreadWorkers

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


def _runner(workers: Any) -> _ThreadRunner | _PoolRunner:
    from .workers.dask import DaskWorkers
    from .workers.remote import RemoteWorkers

    if isinstance(workers, numbers.Integral) and not isinstance(workers, bool) and int(workers) >= 1:
        return _ThreadRunner(int(workers))
    if isinstance(workers, ThreadWorkers):
        return _ThreadRunner(workers.n)
    if isinstance(workers, DaskWorkers):
        return _PoolRunner(workers, lambda: workers.client is not None, workers.total_threads)
    if isinstance(workers, RemoteWorkers):
        if not workers.trust_workers:
            raise InvalidParameterError(
                f"parallel_config(backend='hpsearch', workers={workers!r}): joblib calls return Python "
                "objects, which this process would unpickle, so anyone holding the pool's join token could "
                "run code here. If every worker is yours, create the pool with "
                "RemoteWorkers(..., trust_workers=True)"
            )
        return _PoolRunner(workers, lambda: workers._thread is not None, workers.total_slots)
    raise InvalidParameterError(
        "parallel_config(backend='hpsearch') needs workers= an hpsearch pool (LocalProcesses, "
        "RemoteWorkers(trust_workers=True), DaskWorkers, ThreadWorkers) or a number of threads "
        f"(int >= 1); got {workers!r}"
    )


class HPSearchBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib backend running ``Parallel`` batches on hpsearch workers.

    Parameters
    ----------
    workers : LocalProcesses, RemoteWorkers, DaskWorkers, ThreadWorkers or int
        Where the batches run. A pool that is not open is opened for each
        ``Parallel`` call and closed after it; open it once (``with pool:``) to keep
        the data cached on the workers between calls. A ``RemoteWorkers`` pool must
        trust its workers (``trust_workers=True``).

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
        if workers is None:
            raise InvalidParameterError(
                "parallel_config(backend='hpsearch') needs workers=: an hpsearch pool (LocalProcesses, "
                "RemoteWorkers(trust_workers=True), DaskWorkers, ThreadWorkers) or a number of threads, "
                "e.g. parallel_config(backend='hpsearch', workers=LocalProcesses(4))"
            )
        self.workers = workers
        self._runner = _runner(workers)

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        self._runner.open()
        total = self._runner.threads()
        if n_jobs is None or n_jobs < 0:
            return max(1, total + 1 + n_jobs) if n_jobs is not None and n_jobs < -1 else max(1, total)
        return int(n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Any, callback: Any = None) -> concurrent.futures.Future:
        future = self._runner.submit(_TracebackCapturingWrapper(func))
        future.get = future.result  # type: ignore[attr-defined]  # joblib's AsyncResult API
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: concurrent.futures.Future) -> Any:
        return _retrieve_traceback_capturing_wrapped_call(out.result())

    def abort_everything(self, ensure_ready: bool = True) -> None:
        self._runner.abort()
        if ensure_ready:
            self._runner.open()

    def terminate(self) -> None:
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
