"""Workers: local threads, ZeroMQ worker processes (remote or local), and Dask clusters."""

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
from .dask import DaskWorker, DaskWorkers
from .local import LocalProcesses, warm_processes
from .remote import RemoteWorker, RemoteWorkers
from .threads import ThreadWorker, ThreadWorkers

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
