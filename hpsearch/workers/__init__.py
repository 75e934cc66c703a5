"""Workers: local threads, ZeroMQ worker processes (remote or local), and Dask clusters.

:class:`DaskWorkers` and :class:`DaskWorker` are imported on first use: importing Dask's
``distributed`` takes about half a second, which every ``hpsearch-worker`` process (and
every warm local process) would otherwise pay at start-up without ever using it.
"""

import typing as _typing

from .auto import AutoWorkers
from .base import (
    Emit,
    PoolFailed,
    Results,
    SlotFreed,
    Task,
    TaskFailed,
    TaskFinished,
    Worker,
    WorkerEvent,
    WorkerJoined,
    WorkerLost,
    WorkerPool,
)
from .local import LocalProcesses, warm_processes
from .remote import RemoteWorker, RemoteWorkers
from .threads import ThreadWorker, ThreadWorkers

if _typing.TYPE_CHECKING:
    from .dask import DaskWorker, DaskWorkers

_LAZY = {"DaskWorker", "DaskWorkers"}


def __getattr__(name: str) -> _typing.Any:
    """``DaskWorker``/``DaskWorkers``, imported from :mod:`hpsearch.workers.dask` on first use."""
    if name in _LAZY:
        from . import dask

        return getattr(dask, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__all__ = [
    "AutoWorkers",
    "DaskWorker",
    "DaskWorkers",
    "Emit",
    "LocalProcesses",
    "PoolFailed",
    "RemoteWorker",
    "RemoteWorkers",
    "Results",
    "SlotFreed",
    "Task",
    "TaskFailed",
    "TaskFinished",
    "ThreadWorker",
    "ThreadWorkers",
    "Worker",
    "WorkerEvent",
    "WorkerJoined",
    "WorkerLost",
    "WorkerPool",
    "warm_processes",
]
