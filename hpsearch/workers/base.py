"""The uniform Worker interface, and the events workers report.

The scheduler sees every worker — a local thread pool or a remote machine — through
the same small interface: a ``name``, a number of ``slots``, ``submit(task)`` (never
blocks) and ``close()``. Workers come from a :class:`WorkerPool`, which the search
starts with the shared :class:`~hpsearch.evaluation.EvaluationContext` and an
``emit`` callback. Everything a worker has to say goes through ``emit`` as one of the
event types below. ``emit`` may be called from any thread; the scheduler handles the
event on that thread before it returns (or, if another thread is handling events, that
thread handles it before it stops), and may call ``submit`` from it (a pool's
I/O thread then sends the next task in the same pass), so ``submit`` must also be
callable from any thread, including from inside ``emit``. So never call ``emit``
while holding a lock that ``submit`` takes: that thread would wait for itself. Workers
never import the scheduler.

A worker may also have ``abandon(task)``: the scheduler gave up on a task it started
(it ran past ``fit_timeout``, or the search ended while it ran). A worker that can
stop it does (a process is killed, and the pool replaces it); one that can only
leave it behind (a thread) starts a replacement and reports ``SlotFreed``. Without
``abandon``, the task's slot stays busy until the task ends.

A worker may also have ``submit_many(tasks)``: several tasks in one message (sized by
the scheduler from measured task times, :mod:`hpsearch.scheduler.state`), which it
runs one by one in the order given, exactly as if each had been submitted alone. It
may report several results together as one :class:`Results` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

from ..evaluation import EvaluationContext, FoldResult

__all__ = [
    "Task",
    "Worker",
    "WorkerPool",
    "Emit",
    "WorkerJoined",
    "TaskFinished",
    "TaskFailed",
    "WorkerLost",
    "PoolFailed",
    "SlotFreed",
    "Results",
    "WorkerEvent",
]


@dataclass(frozen=True, slots=True)
class Task:
    """One evaluation: a candidate's params on one CV fold.

    ``attempt`` counts dispatches of the same task (0 first); a task is re-dispatched
    when the worker running it is lost. The context is implied: a pool serves one
    search, and so one context, at a time.
    """

    task_id: int
    candidate_id: int
    fold: int
    params: dict[str, Any] = field(hash=False)
    attempt: int = 0


@runtime_checkable
class Worker(Protocol):
    """What the scheduler needs from a worker.

    ``slots`` tasks run at once; the scheduler keeps at most ``slots + prefetch``
    tasks submitted and unfinished (prefetch hides a network round trip).
    """

    name: str
    slots: int
    prefetch: int

    def submit(self, task: Task) -> None:
        """Start the task, or queue it; never blocks."""

    def close(self) -> None:
        """Stop taking tasks and release resources."""


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    """A worker is ready for tasks."""

    worker: Worker


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """A task ran; ``result`` holds its scores, or the fit error as data."""

    worker: str
    task_id: int
    attempt: int
    result: FoldResult


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A worker could not run a task at all (not a fit error: e.g. the context failed to load)."""

    worker: str
    task_id: int
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """A worker is gone; every task it had not finished must run elsewhere."""

    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class PoolFailed:
    """A pool cannot go on (e.g. no worker came back in time); the search stops with ``error``."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class SlotFreed:
    """A worker left an abandoned task behind and can run another in its place."""

    worker: str
    task_id: int


@dataclass(frozen=True, slots=True)
class Results:
    """Several results reported together (a batch's, or those that arrived at once):
    the scheduler handles them in this order and then dispatches once."""

    events: tuple[Union[TaskFinished, TaskFailed], ...]


WorkerEvent = Union[WorkerJoined, TaskFinished, TaskFailed, WorkerLost, PoolFailed, SlotFreed, Results]
Emit = Callable[[Any], None]


@runtime_checkable
class WorkerPool(Protocol):
    """A source of workers for one search at a time.

    ``start`` makes the context available to the pool's workers and reports each of
    them with ``WorkerJoined`` through ``emit`` (now or later: workers may join while
    the search runs). It may block until the pool is usable and raise
    :class:`~hpsearch.errors.NoWorkersError` if it never is. ``stop`` ends the
    search's use of the pool; a pool opened by the user (``with pool:``) stays open
    for the next search, one created by ``run_search`` is closed.
    """

    def start(self, context: EvaluationContext, emit: Emit) -> None: ...

    def stop(self) -> None: ...
