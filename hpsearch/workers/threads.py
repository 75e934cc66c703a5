"""Local thread workers: the default, with nothing to set up.

scikit-learn, numpy and scipy release the GIL in their numeric kernels, so N threads
fit N models at once without copying the data. What N threads must not do is
oversubscribe the cores: each fit's BLAS/OpenMP pools are limited to
``cores // N`` threads for the duration of the search (threadpoolctl).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import traceback
from typing import Any

from .._validation import check_integer
from ..evaluation import EvaluationContext, evaluate
from .base import Emit, Task, TaskFailed, TaskFinished, WorkerJoined

logger = logging.getLogger(__name__)

__all__ = ["ThreadWorker", "ThreadWorkers", "available_cores"]

_STOP = None
_POOL_IDS = itertools.count(1)  # worker names must be unique across the pools of a search


def available_cores() -> int:
    """Cores this process may use (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ThreadWorker:
    """``slots`` threads in this process, seen by the scheduler as one worker.

    A thread cannot be stopped: a task the scheduler abandons (past its time limit)
    is left to finish in the background, its result dropped, and a new thread takes
    its slot at once.
    """

    prefetch = 0

    def __init__(self, context: EvaluationContext, emit: Emit, slots: int, *,
                 name: str = "threads", inner_threads: int = 1) -> None:
        self.name = name
        self.slots = slots
        self._context = context
        self._emit = emit
        self._inner_threads = inner_threads
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[int, Task] = {}  # thread ident -> the task it runs
        self._abandoned: set[int] = set()  # thread idents left behind
        self._closed = False
        self._count = itertools.count()
        self._threads: list[threading.Thread] = []
        for _ in range(slots):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name=f"hpsearch-{self.name}-{next(self._count)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def submit(self, task: Task) -> None:
        self._tasks.put(task)

    def abandon(self, task: Task) -> bool:
        """Leave the thread running ``task`` behind and start another in its place;
        True when a slot was freed so."""
        with self._lock:
            ident = next((i for i, t in self._running.items() if t == task and i not in self._abandoned), None)
            if ident is None or self._closed:
                return False
            self._abandoned.add(ident)
            self._threads = [t for t in self._threads if t.ident != ident]
            logger.warning("thread worker %s leaves task %d behind; a new thread takes its slot",
                           self.name, task.task_id)
            self._start_thread()
        return True

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        ident = threading.get_ident()
        # OpenMP's thread count is a per-thread setting: set it in each worker thread.
        with threadpool_limits(limits=self._inner_threads, user_api="openmp"):
            while (task := self._tasks.get()) is not _STOP:
                with self._lock:
                    self._running[ident] = task
                try:
                    result = evaluate(self._context, task.params, task.fold)
                except BaseException:  # evaluate keeps fit errors as data; this is a bug
                    event: Any = TaskFailed(self.name, task.task_id, task.attempt, traceback.format_exc())
                else:
                    event = TaskFinished(self.name, task.task_id, task.attempt, result)
                with self._lock:
                    del self._running[ident]
                    if ident in self._abandoned:  # replaced: its result is stale, its slot gone
                        self._abandoned.discard(ident)
                        return
                self._emit(event)

    def close(self, timeout: float = 1.0) -> None:
        """Drop the queued tasks and stop the threads once their fit ends, waiting at
        most ``timeout`` seconds in all: a fit that runs on is left behind."""
        import time

        with self._lock:
            self._closed = True
        while True:  # drop what is queued, so closing does not wait for it
            try:
                self._tasks.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._tasks.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("thread %s is still running a fit; it is left to end in the background",
                               thread.name)


class ThreadWorkers:
    """A pool of N local threads, the default behind ``run_search(workers=N)``.

    Parameters
    ----------
    n : int
        Number of fits run at once.
    inner_threads : int or None
        BLAS/OpenMP threads each fit may use; None means ``max(1, cores // n)``.

    Examples
    --------
    >>> from hpsearch import ThreadWorkers, run_search
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> result = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 3]},
    ...                     X, y, workers=ThreadWorkers(2), progress=False)
    >>> result.best_params_
    {'max_depth': 3}
    """

    def __init__(self, n: int, inner_threads: int | None = None) -> None:
        self.n = check_integer("the number of thread workers", n, 1)
        self.inner_threads = inner_threads or max(1, available_cores() // self.n)
        self._worker: ThreadWorker | None = None
        self._limits: Any = None

    def start(self, context: EvaluationContext, emit: Emit) -> None:
        from threadpoolctl import threadpool_limits

        # BLAS thread counts are process-wide: limit them once for the whole search.
        self._limits = threadpool_limits(limits=self.inner_threads, user_api="blas")
        self._worker = ThreadWorker(context, emit, self.n, name=f"threads-{next(_POOL_IDS)}",
                                    inner_threads=self.inner_threads)
        emit(WorkerJoined(self._worker))

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

    def __repr__(self) -> str:
        return f"ThreadWorkers({self.n})"
