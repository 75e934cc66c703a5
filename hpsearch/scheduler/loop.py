"""The loop that drives :class:`~hpsearch.scheduler.state.SchedulerState`.

Events are handled on the thread that reports them, under one lock: a worker thread
that finishes a fit, or a remote pool's I/O thread that receives a result, hands the
event to the state machine and carries out the commands it returns at once — the
next task goes out from that same thread, with no hand-off to another thread and
back (each one a wake-up and a GIL transfer, the main cost of a tiny task). An event
reported while this thread is handling one (a nested ``emit``, from a ``submit``) is
queued and handled next, never by recursion; another thread does not wait for the
lock: it queues its event, which the handling thread takes before it lets go. Results
queued one after another are handled as one ``Results`` (one dispatch), and tiny tasks
travel in batches to workers that take them (:mod:`hpsearch.scheduler.state`).

The caller's thread only waits: it runs the progress callback for each finished
candidate (it is not woken for them when there is none), sends a ``Tick`` every
``poll_interval`` (time limits and stragglers are checked then), and raises the
search's error. The strategy runs on its own thread: a Bayesian ``tell`` that refits
a surrogate for a second does not stop tasks from being dispatched meanwhile. A
strategy whose ``inline`` attribute is True (the halving strategies, grid and random:
their ``ask`` and ``tell`` take microseconds) is asked and told on the thread handling
events instead, and its answer is handled in the same pass: when it has work only once
it hears a score (a rung's next configurations), a free slot gets that work without
waiting for another thread to wake up. Either way, asks and tells reach the strategy
in the order the state machine issued them, so results do not depend on timing.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..evaluation import EvaluationContext, FoldResult
from ..prefix import affinity_key, forget_context
from ..strategies.base import Candidate, ListStrategy, Strategy
from ..workers.base import Results, SlotFreed, Task, TaskFailed, TaskFinished, Worker, WorkerLost, WorkerPool
from ..workers.usage import claim_pools
from .pruning import PairedPruner
from .state import (
    Abandon, Abort, Ask, CandidateDone, Dispatch, DispatchBatch, Proposed, SchedulerState, Tell, Tick,
)

if TYPE_CHECKING:
    from ..storage.journal import SearchJournal

logger = logging.getLogger(__name__)

__all__ = ["run_scheduler", "SearchProgress"]

_STOP = object()

#: Target duration of a batch of tasks in one message (workers with ``submit_many``):
#: tens of milliseconds, so a batch delays nothing a user would see, and tiny tasks
#: cost one message per batch, not one each (see :mod:`hpsearch.scheduler.state`).
BATCH_SECONDS = 0.02


class StrategyRunner:
    """Runs a strategy's ``ask``/``tell`` on a thread of its own, in order."""

    def __init__(self, strategy: Strategy, emit: Callable[[Any], None]) -> None:
        self._strategy = strategy
        self._emit = emit
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hpsearch-strategy", daemon=True)
        self._thread.start()

    def submit(self, command: Ask | Tell | list[Ask | Tell]) -> None:
        """Queue a command, or a list of commands run in order (one wake-up)."""
        self._commands.put(command)

    def _run(self) -> None:
        while (item := self._commands.get()) is not _STOP:
            for command in item if isinstance(item, list) else (item,):
                try:
                    if isinstance(command, Ask):
                        self._emit(ask(self._strategy, command))
                    else:
                        self._strategy.tell(command.candidate_id, command.score)
                except BaseException as exc:  # a strategy bug must end the search, not hang it
                    logger.exception("the strategy raised")
                    self._emit(_StrategyFailed(exc))
                    break

    def close(self, timeout: float = 30.0) -> None:
        """Let pending tells finish (the strategy's final state is complete), then stop."""
        self._commands.put(_STOP)
        self._thread.join(timeout)


@dataclass(frozen=True)
class _StrategyFailed:
    error: BaseException


@dataclass(frozen=True)
class _Over:
    """The search ended: with ``error`` raised, or done when it is None."""

    error: BaseException | None


@dataclass
class SearchProgress:
    """What a progress callback is told after each finished candidate."""

    tasks_done: int
    tasks_total: int | None
    candidates_done: int
    best_score: float
    last: CandidateDone


class _Driver:
    """Feeds events to the state machine on the reporting thread and runs its commands.

    ``emit`` is what the pools and the strategy runner report to. Whatever the caller's
    thread must do (progress callbacks, ending the search) goes to ``notices``.

    One thread at a time handles events. A thread that reports an event while another
    is handling some does not wait: its event is queued, and the handling thread takes
    it before it lets go (it looks again after releasing the lock, so none is left
    behind). Results queued one after another are handled as one ``Results`` (one
    dispatch for all), and the commands for the strategy thread and the caller's
    thread leave once per pass, as one item each: fewer wake-ups per tiny task.
    """

    def __init__(self, state: SchedulerState, strategy_name: str, clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock
        self._strategy_name = strategy_name
        self._lock = threading.RLock()
        self._pending: collections.deque[Any] = collections.deque()
        self._draining = False
        self._over = False
        self._to_strategy: list[Ask | Tell] = []
        self._to_caller: list[Any] = []
        self.runner: StrategyRunner | None = None
        self.inline: Strategy | None = None  # a strategy asked and told on this thread
        self.notify = True  # finished candidates go to the caller's thread (False: nobody listens)
        self.notices: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def start(self) -> None:
        with self._lock:
            self._draining = True
            try:
                self._execute(self._state.start(self._clock()))
                self._drain()
            finally:
                self._draining = False
        self._handle_pending()

    def emit(self, event: Any) -> None:
        """Handle ``event`` now, or leave it to the thread handling events (which
        takes it before it stops); never raises."""
        if isinstance(event, _StrategyFailed):
            self.close(event.error)
            return
        if self._over:
            return
        self._pending.append(event)
        self._handle_pending()

    def _handle_pending(self) -> None:
        while self._pending and not self._over:
            if not self._lock.acquire(blocking=False):
                return  # the thread holding it looks at the queue after releasing it
            try:
                if self._draining:  # this thread, further up the stack: it handles it next
                    return
                self._draining = True
                try:
                    self._drain()
                finally:
                    self._draining = False
            finally:
                self._lock.release()

    def close(self, error: BaseException | None = None) -> None:
        """End the search: events reported from now on are ignored."""
        with self._lock:
            if not self._over:
                self._over = True
                self._pending.clear()
                self._flush()
                self.notices.put(_Over(error))

    def _flush(self) -> None:
        """Hand the commands of this pass to the strategy thread and the caller's."""
        if self._to_strategy:
            assert self.runner is not None
            self.runner.submit(self._to_strategy)
            self._to_strategy = []
        if self._to_caller:
            self.notices.put(self._to_caller)
            self._to_caller = []

    def _drain(self) -> None:
        state = self._state
        pending = self._pending
        try:
            while not self._over:
                if state.done:
                    self.close()
                elif state.stalled:
                    self.close(RuntimeError(
                        f"the strategy {self._strategy_name} proposed no candidate while none is "
                        "pending and it is not finished; it would wait forever"
                    ))
                elif pending:
                    event = pending.popleft()
                    if type(event) in _RESULTS and pending and type(pending[0]) in _RESULTS:
                        events = [event]
                        while pending and type(pending[0]) in _RESULTS:
                            events.append(pending.popleft())
                        event = Results(tuple(events))
                    self._execute(state.handle(event, self._clock()))
                else:
                    return
        except Exception as exc:
            # The caller's thread raises it; a pool's thread must not die of it.
            logger.debug("an error ended the search while handling an event", exc_info=True)
            self.close(exc)
        except BaseException as exc:  # KeyboardInterrupt and the like: the search ends, it goes on up
            self.close(exc)
            raise
        finally:
            self._flush()

    def _execute(self, commands: list[Any]) -> None:
        state = self._state
        for command in commands:
            if isinstance(command, Dispatch):
                try:
                    command.worker.submit(command.task)
                except Exception as exc:  # a worker that cannot take tasks is lost
                    self._pending.append(WorkerLost(command.worker.name, f"submit failed: {exc!r}"))
            elif isinstance(command, DispatchBatch):
                try:
                    command.worker.submit_many(command.tasks)  # type: ignore[attr-defined]
                except Exception as exc:
                    self._pending.append(WorkerLost(command.worker.name, f"submit failed: {exc!r}"))
            elif isinstance(command, (Ask, Tell)):
                if self.inline is None:
                    self._to_strategy.append(command)
                elif not self._run_inline(self.inline, command):
                    return
            elif isinstance(command, CandidateDone):
                if self.notify:
                    self._to_caller.append((command, state.n_tasks_done, len(state.completed)))
            elif isinstance(command, Abandon):
                abandon(command.worker, command.task, self._pending.append)
            elif isinstance(command, Abort):
                self.close(command.error)
                return

    def _run_inline(self, strategy: Strategy, command: Ask | Tell) -> bool:
        """Ask or tell a strategy on this thread: its answer is the next event handled, in
        this same pass. False when it raised (the search ends with its error)."""
        try:
            if isinstance(command, Ask):
                self._pending.append(ask(strategy, command))
            else:
                strategy.tell(command.candidate_id, command.score)
        except Exception as exc:
            logger.exception("the strategy raised")
            self.close(exc)
            return False
        return True


_RESULTS = (TaskFinished, TaskFailed)


def ask(strategy: Strategy, command: Ask) -> Proposed:
    """The strategy's answer to ``command``: its ``ask``, or ``ask_idle`` for idle slots."""
    if command.idle:
        candidates = strategy.ask_idle(command.n)  # type: ignore[attr-defined]
    else:
        candidates = strategy.ask(command.n)
    return Proposed(list(candidates), bool(strategy.finished), idle=command.idle)


def abandon(worker: Worker, task: Task, emit: Callable[[Any], None]) -> None:
    """Tell ``worker`` to give ``task`` up, if it can (see :mod:`hpsearch.workers.base`)."""
    method = getattr(worker, "abandon", None)
    if method is None:
        return
    try:
        if method(task):
            emit(SlotFreed(worker.name, task.task_id))
    except Exception:  # a worker that cannot stop a task keeps its slot busy
        logger.exception("worker %s could not abandon task %d", worker.name, task.task_id)


def run_scheduler(
    strategy: Strategy,
    pools: Sequence[WorkerPool],
    context: EvaluationContext,
    *,
    score_key: str,
    on_candidate: Callable[[SearchProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    poll_interval: float = 0.5,
    journal: SearchJournal | None = None,
    fit_timeout: float | None = None,
    max_task_deaths: int = 3,
    pruner: PairedPruner | None = None,
) -> list[tuple[Candidate, list[FoldResult]]]:
    """Run a whole search and return every candidate with its fold results, in id order.

    Raises the error of an ``Abort`` (``error_score="raise"``, a pool that failed, a
    strategy that raised) after stopping the pools. Whatever ends a search early (also
    KeyboardInterrupt) carries the candidates completed so far, in the same form, as
    its ``completed_candidates`` attribute: nothing already computed is lost.

    With a ``journal`` (:mod:`hpsearch.storage`), results are recorded as they arrive
    and a stored search resumes: the strategy replays its history and the stored
    results are not run again.

    However the search ends, tasks of it still running are abandoned (a process
    running one is stopped), and the pools are released for the next search.
    ``fit_timeout`` (seconds) records a fit running longer as failed and abandons it;
    a task lost with ``max_task_deaths`` workers that were running it fails as data.

    A ``pruner`` skips the remaining folds of candidates that cannot reach the best.
    """
    with claim_pools(pools):
        return _run(
            strategy, pools, context, score_key=score_key, on_candidate=on_candidate, clock=clock,
            poll_interval=poll_interval, journal=journal, fit_timeout=fit_timeout,
            max_task_deaths=max_task_deaths, pruner=pruner,
        )


def _run(
    strategy: Strategy,
    pools: Sequence[WorkerPool],
    context: EvaluationContext,
    *,
    score_key: str,
    on_candidate: Callable[[SearchProgress], None] | None,
    clock: Callable[[], float],
    poll_interval: float,
    journal: SearchJournal | None,
    fit_timeout: float | None,
    max_task_deaths: int,
    pruner: PairedPruner | None,
) -> list[tuple[Candidate, list[FoldResult]]]:
    known_results = None
    if journal is not None:
        tasks: dict[int, Any] = {}
        try:
            strategy, known_results = journal.begin(
                strategy, score_key=score_key, score_names=list(context.scorers),
                task_of=lambda task_id: _candidate_fold(tasks.get(task_id)),
            )
        except BaseException:
            journal.end(None)
            raise
    incremental = getattr(context, "incremental", None)
    affinity: Callable[[Any], Any] | None
    if incremental is not None:  # continuations go to the worker keeping the model
        from ..incremental import model_affinity

        affinity = model_affinity(incremental)
    else:
        affinity = affinity_key(context)
    state = SchedulerState(
        context.n_splits,
        score_names=list(context.scorers),
        score_key=score_key,
        error_score=context.error_score,
        return_train_score=context.return_train_score,
        known_results=known_results,
        affinity=affinity,
        affinity_exclusive=incremental is not None,
        max_deaths=max_task_deaths,
        fit_timeout=fit_timeout,
        # A strategy whose candidates do not depend on scores is asked further ahead when
        # prefixes are reused, so that the queue holds tasks of several prefixes to route.
        lookahead=2 + 2 * context.n_splits if affinity is not None and isinstance(strategy, ListStrategy) else 2,
        split_offsets=context.subsample_offsets,
        pruner=pruner,
        batch_seconds=BATCH_SECONDS,
        idle_asks=callable(getattr(strategy, "ask_idle", None)),
    )
    if journal is not None:
        tasks = state.tasks  # read by the journal's writer thread, to name each result's task
    driver = _Driver(state, type(strategy).__name__, clock)
    driver.notify = on_candidate is not None  # else the caller's thread is not woken per candidate
    runner = driver.runner = StrategyRunner(strategy, driver.emit)
    if getattr(strategy, "inline", False) is True:
        # Its ask and tell take microseconds: a free slot does not wait for the strategy
        # thread to wake up and answer (on a busy machine, milliseconds per answer).
        driver.inline = strategy
    total = strategy.total
    tasks_total = None if total is None else total * context.n_splits
    best = float("-inf")
    started: list[WorkerPool] = []
    interrupted = False
    try:
        driver.start()
        emit = driver.emit if journal is None else journal.recording(driver.emit)
        for pool in pools:
            pool.start(context, emit)
            started.append(pool)
        next_tick = clock() + poll_interval
        while True:
            try:
                notice = driver.notices.get(timeout=max(0.0, next_tick - clock()))
            except queue.Empty:
                notice = None
            if clock() >= next_tick:  # also while results keep coming: time limits are checked
                driver.emit(Tick(clock()))
                next_tick = clock() + poll_interval
            if notice is None:
                continue
            if isinstance(notice, _Over):
                if notice.error is not None:
                    raise notice.error
                break
            for done, tasks_done, candidates_done in notice:  # the candidates of one pass
                if done.score == done.score:  # not nan
                    best = max(best, done.score)
                if on_candidate is not None:
                    on_candidate(SearchProgress(tasks_done, tasks_total, candidates_done, best, done))
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        driver.close()  # from here on, no thread changes the state
        try:
            exc.completed_candidates = state.results()  # type: ignore[attr-defined]
        except AttributeError:  # an exception type that takes no attributes
            pass
        outcome: BaseException | None = exc
        raise
    else:
        outcome = None
    finally:
        driver.close()
        runner.close(2.0 if interrupted else 30.0)
        for pool in reversed(started):
            try:
                pool.stop()
            except Exception:
                logger.exception("stopping worker pool %r failed", pool)
        # After the pools stopped (a closed thread worker starts no replacement): a
        # process still running a task of this search is stopped, not left busy.
        for worker, task in state.leftovers():
            abandon(worker, task, lambda event: None)
        forget_context(context)  # this process's cached prefixes (thread workers)
        if incremental is not None:
            from ..incremental import forget_models

            forget_models(context)  # and models (thread workers)
        if journal is not None:
            journal.end(outcome)
    return state.results()


def _candidate_fold(task_state: Any) -> tuple[int, int] | None:
    """A task's (candidate id, CV fold), as the journal stores its result."""
    if task_state is None:
        return None
    return task_state.task.candidate_id, task_state.fold
