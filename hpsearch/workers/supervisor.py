"""When to restart the worker processes of a local pool: a state machine, no I/O.

:class:`Supervisor` is told when each process was started, when it joined (said
HELLO) and when it exited, with the time; it answers which slots to start a process
in now. :class:`~hpsearch.workers.local.LocalProcesses` feeds it from its I/O
thread's housekeeping and does the spawning.

Rules:

* A process that exits after it joined, or after ``healthy_after`` seconds, is
  replaced at once (a task that kills its worker is bounded by the scheduler's
  death limit, not here). One that dies before joining is replaced after a delay
  that doubles with each such death in a row, from ``backoff_base`` up to
  ``backoff_cap``. A process the pool stopped on purpose is replaced at once.
* A slot whose processes exit with an error (a positive exit code, e.g. an import
  error) before joining ``max_start_failures`` times in a row cannot start: the pool
  fails with the reason, at the first such exit while no process of the pool has
  ever joined (a broken environment is reported at once). Processes killed by a
  signal before joining are simply replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Supervisor"]


@dataclass
class _Slot:
    pid: int | None = None
    started: float = 0.0
    joined: bool = False
    short_lives: int = 0  # consecutive processes that died before joining
    start_failures: int = 0  # consecutive processes that failed before joining
    restart_at: float | None = None


class Supervisor:
    """Restart decisions for ``n`` process slots.

    Parameters
    ----------
    n : int
        Process slots.
    backoff_base, backoff_cap : float
        Restart delay after the first short life, and its upper bound (seconds).
    healthy_after : float
        A process that joined, or lived this long, resets its slot's backoff.
    max_start_failures : int
        Consecutive failed starts of a slot before the pool gives up.

    Examples
    --------
    >>> sup = Supervisor(1, backoff_base=1.0)
    >>> sup.due(0.0)  # every slot needs a process at first
    [0]
    >>> sup.started(0, pid=100, now=0.0)
    >>> sup.exited(100, returncode=-9, now=2.0)  # killed before it joined: back off
    >>> sup.due(2.5), sup.due(3.0)
    ([], [0])
    >>> sup.started(0, pid=101, now=3.0); sup.joined(101)
    >>> sup.exited(101, returncode=-6, now=4.0)  # it had joined: replaced at once
    >>> sup.due(4.0)
    [0]
    """

    def __init__(self, n: int, *, backoff_base: float = 0.25, backoff_cap: float = 10.0,
                 healthy_after: float = 10.0, max_start_failures: int = 3) -> None:
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.healthy_after = healthy_after
        self.max_start_failures = max_start_failures
        self.slots = [_Slot(restart_at=0.0) for _ in range(n)]
        self.failure: str | None = None  # why the pool cannot start, once it cannot
        self.any_joined = False

    def started(self, slot: int, pid: int, now: float) -> None:
        state = self.slots[slot]
        state.pid, state.started, state.joined, state.restart_at = pid, now, False, None

    def joined(self, pid: int) -> None:
        for state in self.slots:
            if state.pid == pid and not state.joined:
                state.joined = self.any_joined = True
                state.start_failures = 0

    def exited(self, pid: int, returncode: int, now: float, *, stopped: bool = False) -> None:
        """The process ``pid`` ended with ``returncode``; ``stopped``: the pool killed it."""
        for index, state in enumerate(self.slots):
            if state.pid != pid:
                continue
            state.pid = None
            if stopped:
                state.restart_at = now
                return
            if not state.joined and returncode > 0:
                state.start_failures += 1
                limit = self.max_start_failures if self.any_joined else 1
                if state.start_failures >= limit and self.failure is None:
                    self.failure = (f"the worker process of slot {index} exited with code {returncode} "
                                    f"before joining ({state.start_failures} time(s) in a row)")
            if state.joined or now - state.started >= self.healthy_after:
                state.short_lives = 0
                delay = 0.0
            else:
                state.short_lives += 1
                delay = min(self.backoff_cap, self.backoff_base * 2 ** (state.short_lives - 1))
            state.restart_at = now + delay
            return

    def due(self, now: float) -> list[int]:
        """Slots to start a process in now (none once the pool has failed)."""
        if self.failure is not None:
            return []
        return [i for i, s in enumerate(self.slots) if s.pid is None and s.restart_at is not None
                and s.restart_at <= now]
