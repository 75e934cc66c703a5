"""``AutoWorkers``: threads, moved to warm local processes when the fits hold the GIL.

A search starts on N threads in this process (no start-up, no copy of the data). Fits
that release the GIL (numpy, BLAS, Cython kernels) run in parallel there. Fits that
hold it take turns, and processes would be faster: so the first tasks are measured,
and when they show the threads taking turns the search moves to the process's warm
pool of N worker processes (:func:`~hpsearch.workers.local.warm_processes`, started
once and reused by every later search), without losing a task.

The measure: the CPU time of the threads that ran the first ``2 N`` tasks over the
wall time they took, the number of cores busy on average. Threads running in
parallel keep about N busy (a fit running Python or a BLAS kernel limited to one
thread alike); threads taking turns on the GIL keep one. The move is made when fewer
than ``0.65 N`` were busy and a task took at least ``min_task_seconds`` (for tasks
shorter than that, the threads' lower cost per task wins over the processes'
parallelism). On a machine loaded by other programs, fewer cores are busy either
way, and the processes then also get their fairer share of the machine.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .._validation import check_integer
from ..evaluation import EvaluationContext
from .base import Emit, Task, WorkerJoined, WorkerLost
from .local import WarmProcesses
from .threads import ThreadWorker, ThreadWorkers

logger = logging.getLogger(__name__)

__all__ = ["AutoWorkers", "ParallelProbe"]


class ParallelProbe:
    """Decides from the first tasks' CPU times whether the threads take turns on the GIL.

    A pure state machine: ``record(cpu, now)`` per finished task (the CPU time of the
    thread that ran it, and the time it ended) returns ``True`` once, when the move
    to processes is due, and ``False`` otherwise.

    Examples
    --------
    >>> probe = ParallelProbe(n=2, start=0.0, min_task_seconds=0.01)
    >>> [probe.record(0.1, now) for now in (0.1, 0.2, 0.3, 0.4)]  # one core busy of two
    [False, False, False, True]
    >>> probe.decided, probe.move
    (True, True)
    """

    def __init__(self, n: int, *, start: float, min_task_seconds: float = 0.01, threshold: float = 0.65) -> None:
        self.n = n
        self.needed = 2 * n
        self.start = start
        self.min_task_seconds = min_task_seconds
        self.threshold = threshold
        self.cpu = 0.0
        self.count = 0
        self.decided = n < 2  # one thread never takes turns with another
        self.move = False

    def record(self, cpu: float, now: float) -> bool:
        if self.decided:
            return False
        self.count += 1
        self.cpu += cpu
        if self.count < self.needed:
            return False
        self.decided = True
        wall = max(now - self.start, 1e-9)
        cores = self.cpu / wall  # cores busy on average: n when the threads ran in parallel
        per_task = wall * self.n / self.count
        self.move = cores < self.threshold * self.n and per_task >= self.min_task_seconds
        logger.info("first %d tasks: %.2f of %d threads busy on average, %.1f ms per task: %s", self.count, cores,
                    self.n, 1e3 * per_task, "moving to processes" if self.move else "staying on threads")
        return self.move


class _MeasuredThreadWorker(ThreadWorker):
    def __init__(self, *args: Any, on_timing: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_timing = on_timing

    def _run(self, task: Task) -> None:
        cpu = time.thread_time()
        super()._run(task)
        self._on_timing(time.thread_time() - cpu, time.perf_counter())


class AutoWorkers(ThreadWorkers):
    """N threads, moved to N warm local processes when the fits hold the GIL.

    Give it as ``run_search(workers=AutoWorkers(N))``. For a fixed choice, give
    ``workers=ThreadWorkers(N)`` (always threads) or ``workers=warm_processes(N)``
    (always processes, kept warm) or ``workers=LocalProcesses(N)``.

    Parameters
    ----------
    n : int
        Number of fits run at once.
    inner_threads : int or None
        BLAS/OpenMP threads each fit may use; None means ``max(1, cores // n)``.
    min_task_seconds : float
        Tasks shorter than this on average stay on threads.

    Examples
    --------
    >>> from hpsearch import run_search
    >>> from hpsearch.workers.auto import AutoWorkers
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> result = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 3]},
    ...                     X, y, workers=AutoWorkers(2), progress=False)
    >>> result.best_params_
    {'max_depth': 3}
    """

    def __init__(self, n: int, inner_threads: int | None = None, *, min_task_seconds: float = 0.01) -> None:
        super().__init__(check_integer("the number of workers", n, 1), inner_threads)
        self.min_task_seconds = min_task_seconds
        self.moved = False
        self._lock = threading.Lock()
        self._mover: threading.Thread | None = None
        self._processes: WarmProcesses | None = None
        self._stopping = False

    def start(self, context: EvaluationContext, emit: Emit) -> None:
        from threadpoolctl import threadpool_limits

        self.moved = False
        self._stopping = False
        self._context, self._emit = context, emit
        self._probe = ParallelProbe(self.n, start=time.perf_counter(), min_task_seconds=self.min_task_seconds)
        self._limits = threadpool_limits(limits=self.inner_threads, user_api="blas")
        from .threads import _POOL_IDS

        self._worker = _MeasuredThreadWorker(context, emit, self.n, name=f"threads-{next(_POOL_IDS)}",
                                             inner_threads=self.inner_threads, on_timing=self._timing)
        emit(WorkerJoined(self._worker))

    def _timing(self, cpu: float, now: float) -> None:
        with self._lock:
            move = self._probe.record(cpu, now) and not self._stopping
            if move:
                self._mover = threading.Thread(target=self._move, name="hpsearch-auto-move", daemon=True)
                self._mover.start()

    def _move(self) -> None:
        processes = WarmProcesses(self.n)
        try:
            processes.start(self._context, self._emit)
        except Exception:
            logger.warning("could not start local worker processes; the search stays on threads", exc_info=True)
            return
        with self._lock:
            self._processes = processes
            worker, stopping = self._worker, self._stopping
        if worker is None or stopping:
            return
        self.moved = True
        # The scheduler gives the threads' unfinished tasks to the processes; a thread
        # finishing one first is kept (the first result of a task counts).
        self._emit(WorkerLost(worker.name, "the threads kept few cores busy: moved to local processes"))
        worker.close(0.0)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            mover = self._mover
        if mover is not None:
            mover.join(300.0)
        self._mover = None
        if self._processes is not None:
            self._processes.stop()
            self._processes = None
        super().stop()

    def __repr__(self) -> str:
        return f"AutoWorkers({self.n})"
