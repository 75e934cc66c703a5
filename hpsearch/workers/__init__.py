"""Workers: local threads, and (with the remote-workers issue) ZeroMQ processes."""

from .base import (
    Emit,
    PoolFailed,
    Task,
    TaskFailed,
    TaskFinished,
    Worker,
    WorkerEvent,
    WorkerJoined,
    WorkerLost,
    WorkerPool,
)
from .threads import ThreadWorker, ThreadWorkers

__all__ = [
    "Emit",
    "PoolFailed",
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
