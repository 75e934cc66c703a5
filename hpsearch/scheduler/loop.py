"""The loop that drives :class:`~hpsearch.scheduler.state.SchedulerState`.

One thread (the caller's) waits on one event queue fed by the workers and by the
strategy runner, hands each event to the state machine and carries out the commands
it returns. The strategy runs on its own thread: a Bayesian ``tell`` that refits a
surrogate for a second does not stop tasks from being dispatched meanwhile. Asks and
tells reach the strategy in the order the state machine issued them, so results do
not depend on timing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..evaluation import EvaluationContext, FoldResult
from ..strategies.base import Candidate, Strategy
from ..workers.base import WorkerLost, WorkerPool
from .state import Abort, Ask, CandidateDone, Dispatch, Proposed, SchedulerState, Tell, Tick

logger = logging.getLogger(__name__)

__all__ = ["run_scheduler", "SearchProgress"]

_STOP = object()


class StrategyRunner:
    """Runs a strategy's ``ask``/``tell`` on a thread of its own, in order."""

    def __init__(self, strategy: Strategy, emit: Callable[[Any], None]) -> None:
        self._strategy = strategy
        self._emit = emit
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hpsearch-strategy", daemon=True)
        self._thread.start()

    def submit(self, command: Ask | Tell) -> None:
        self._commands.put(command)

    def _run(self) -> None:
        while (command := self._commands.get()) is not _STOP:
            try:
                if isinstance(command, Ask):
                    candidates = self._strategy.ask(command.n)
                    self._emit(Proposed(list(candidates), bool(self._strategy.finished)))
                else:
                    self._strategy.tell(command.candidate_id, command.score)
            except BaseException as exc:  # a strategy bug must end the search, not hang it
                logger.exception("the strategy raised")
                self._emit(_StrategyFailed(exc))

    def close(self, timeout: float = 30.0) -> None:
        """Let pending tells finish (the strategy's final state is complete), then stop."""
        self._commands.put(_STOP)
        self._thread.join(timeout)


@dataclass(frozen=True)
class _StrategyFailed:
    error: BaseException


@dataclass
class SearchProgress:
    """What a progress callback is told after each finished candidate."""

    tasks_done: int
    tasks_total: int | None
    candidates_done: int
    best_score: float
    last: CandidateDone


def run_scheduler(
    strategy: Strategy,
    pools: Sequence[WorkerPool],
    context: EvaluationContext,
    *,
    score_key: str,
    on_candidate: Callable[[SearchProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    poll_interval: float = 0.5,
) -> list[tuple[Candidate, list[FoldResult]]]:
    """Run a whole search and return every candidate with its fold results, in id order.

    Raises the error of an ``Abort`` (``error_score="raise"``, a pool that failed, a
    strategy that raised) after stopping the pools.
    """
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    state = SchedulerState(
        context.n_splits,
        score_names=list(context.scorers),
        score_key=score_key,
        error_score=context.error_score,
        return_train_score=context.return_train_score,
    )
    runner = StrategyRunner(strategy, events.put)
    total = strategy.total
    tasks_total = None if total is None else total * context.n_splits
    best = float("-inf")
    started: list[WorkerPool] = []
    try:
        for pool in pools:
            pool.start(context, events.put)
            started.append(pool)
        commands = state.start()
        while True:
            for command in commands:
                if isinstance(command, Dispatch):
                    try:
                        command.worker.submit(command.task)
                    except Exception as exc:  # a worker that cannot take tasks is lost
                        events.put(WorkerLost(command.worker.name, f"submit failed: {exc!r}"))
                elif isinstance(command, (Ask, Tell)):
                    runner.submit(command)
                elif isinstance(command, CandidateDone):
                    if command.score == command.score:  # not nan
                        best = max(best, command.score)
                    if on_candidate is not None:
                        on_candidate(
                            SearchProgress(state.n_tasks_done, tasks_total, len(state.completed), best, command)
                        )
                elif isinstance(command, Abort):
                    raise command.error
            if state.done:
                break
            if state.stalled:
                raise RuntimeError(
                    f"the strategy {type(strategy).__name__} proposed no candidate while none is "
                    "pending and it is not finished; it would wait forever"
                )
            try:
                event = events.get(timeout=poll_interval)
            except queue.Empty:
                event = Tick(clock())
            if isinstance(event, _StrategyFailed):
                raise event.error
            commands = state.handle(event)
    finally:
        runner.close()
        for pool in reversed(started):
            try:
                pool.stop()
            except Exception:
                logger.exception("stopping worker pool %r failed", pool)
    return state.results()
