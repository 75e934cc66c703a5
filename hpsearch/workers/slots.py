"""The slot loop shared by every worker that runs tasks on threads.

:class:`SlotThreads` runs ``slots`` threads that take jobs from one queue, each
with its OpenMP pool limited (a per-thread setting), and hands each job to a
function; :func:`run_task` evaluates one task and keeps even a bug's exception as
text, so a slot thread never dies. :class:`~hpsearch.workers.threads.ThreadWorker`
reports to the scheduler from its slot threads; the ``hpsearch-worker`` process
queues results for its socket's thread.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from ..evaluation import EvaluationContext, FoldResult, clip_text, evaluate

logger = logging.getLogger(__name__)

__all__ = ["SlotThreads", "run_task"]

J = TypeVar("J")


def run_task(context: EvaluationContext, params: Mapping[str, Any], fold: int) -> FoldResult | str:
    """The task's result (fit errors included, as data), or the traceback of a bug.

    Examples
    --------
    >>> run_task(None, {}, 0).splitlines()[-1]  # no context: a bug, not a fit failure
    "AttributeError: 'NoneType' object has no attribute 'splits'"
    """
    try:
        return evaluate(context, params, fold)
    except BaseException:  # even SystemExit from a fit: the task fails, the thread lives
        return clip_text(traceback.format_exc())


class SlotThreads(Generic[J]):
    """``n`` daemon threads running ``handle(job)`` for each job put, in order.

    Parameters
    ----------
    n : int
        Threads, i.e. jobs run at once.
    handle : callable
        Runs one job; it must not raise (see :func:`run_task`).
    name : str
        Thread names are ``hpsearch-{name}-{i}``.
    inner_threads : int
        OpenMP threads each job may use.

    Examples
    --------
    >>> done = queue.SimpleQueue()
    >>> slots = SlotThreads(2, done.put, name="doc", inner_threads=1)
    >>> slots.put(1); slots.put(2)
    >>> sorted([done.get(timeout=10), done.get(timeout=10)])
    [1, 2]
    >>> slots.close()
    """

    def __init__(self, n: int, handle: Callable[[J], None], *, name: str, inner_threads: int = 1) -> None:
        self._handle = handle
        self._name = name
        self._inner_threads = inner_threads
        self._jobs: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[int, J] = {}  # thread ident -> the job it runs
        self._abandoned: set[int] = set()  # thread idents left behind
        self._closed = False
        self._count = itertools.count()
        self._threads: list[threading.Thread] = []
        for _ in range(n):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name=f"hpsearch-{self._name}-{next(self._count)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def put(self, job: J) -> None:
        """Queue a job (any thread; never blocks)."""
        self._jobs.put(job)

    def queued(self) -> bool:
        """Whether jobs wait to be taken (any thread)."""
        return not self._jobs.empty()

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        # OpenMP's thread count is a per-thread setting: set it in each slot thread.
        with threadpool_limits(limits=self._inner_threads, user_api="openmp"):
            ident = threading.get_ident()
            while (job := self._jobs.get()) is not None:
                with self._lock:
                    self._running[ident] = job
                self._handle(job)
                with self._lock:
                    del self._running[ident]
                    if ident in self._abandoned:  # replaced: its slot is another thread's now
                        self._abandoned.discard(ident)
                        return

    def abandon(self, job: J) -> bool:
        """Leave the thread running ``job`` behind (a thread cannot be stopped) and start
        another in its place; True when a slot was freed so."""
        with self._lock:
            ident = next((i for i, j in self._running.items() if j == job and i not in self._abandoned), None)
            if ident is None or self._closed:
                return False
            self._abandoned.add(ident)
            self._threads = [t for t in self._threads if t.ident != ident]
            self._start_thread()
        return True

    def left_behind(self) -> bool:
        """Whether the calling slot thread was abandoned (its job's result is stale)."""
        with self._lock:
            return threading.get_ident() in self._abandoned

    def close(self, timeout: float = 0.0) -> None:
        """Drop the queued jobs and stop each thread after its running job; wait up to
        ``timeout`` seconds in all for them (0: do not wait, the threads are daemons);
        a job that runs on is left to end in the background."""
        with self._lock:
            self._closed = True
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if timeout > 0:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    logger.warning("thread %s is still running a fit; it is left to end in the background",
                                   thread.name)
