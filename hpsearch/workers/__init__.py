"""Workers: local threads, and ZeroMQ worker processes (remote or local)."""

from .base import (
    Emit,
    PoolFailed,
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
from .local import LocalProcesses
from .remote import RemoteWorker, RemoteWorkers
from .threads import ThreadWorker, ThreadWorkers

__all__ = [
    "Emit",
    "LocalProcesses",
    "PoolFailed",
    "RemoteWorker",
    "RemoteWorkers",
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
]
