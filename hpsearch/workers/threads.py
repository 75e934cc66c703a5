"""Local thread workers, with nothing to set up: where ``workers=N`` starts.

scikit-learn, numpy and scipy release the GIL in their numeric kernels, so N threads
fit N models at once without copying the data. What N threads must not do is
oversubscribe the cores: each fit's BLAS/OpenMP pools are limited to
``cores // N`` threads for the duration of the search (threadpoolctl).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from typing import Any

from .._validation import check_integer
from ..evaluation import EvaluationContext
from .base import Emit, Task, TaskFailed, TaskFinished, WorkerJoined
from .slots import SlotThreads, run_task

logger = logging.getLogger(__name__)

__all__ = ["ThreadWorker", "ThreadWorkers", "available_cores"]

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
        self._slots: SlotThreads[Task] = SlotThreads(slots, self._run, name=name, inner_threads=inner_threads)

    def submit(self, task: Task) -> None:
        self._slots.put(task)

    def submit_many(self, tasks: Sequence[Task]) -> None:
        """Queue a batch; the slot threads take its tasks one by one, in order."""
        for task in tasks:
            self._slots.put(task)

    def abandon(self, task: Task) -> bool:
        """Leave the thread running ``task`` behind and start another in its place;
        True when a slot was freed so."""
        if not self._slots.abandon(task):
            return False
        logger.warning("thread worker %s leaves task %d behind; a new thread takes its slot",
                       self.name, task.task_id)
        return True

    def _run(self, task: Task) -> None:
        result = run_task(self._context, task.params, task.fold)
        if self._slots.left_behind():  # abandoned: its result is stale, its slot gone
            return
        if isinstance(result, str):  # evaluate keeps fit errors as data; this is a bug
            self._emit(TaskFailed(self.name, task.task_id, task.attempt, result))
        else:
            self._emit(TaskFinished(self.name, task.task_id, task.attempt, result))

    def close(self, timeout: float = 1.0) -> None:
        """Drop the queued tasks and stop the threads once their fit ends, waiting at
        most ``timeout`` seconds in all: a fit that runs on is left behind."""
        self._slots.close(timeout)


class ThreadWorkers:
    """A pool of N local threads: ``workers=ThreadWorkers(N)`` runs a search on threads only.

    ``workers=N`` starts on threads too, and may move to processes
    (:class:`~hpsearch.workers.auto.AutoWorkers`).

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
