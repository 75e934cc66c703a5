"""The scheduling state machine: events in, commands out, no I/O.

:class:`SchedulerState` turns candidates into (candidate, fold) tasks, hands them to
workers up to each worker's capacity, aggregates fold results per candidate, and
decides when to ask the strategy for more and what to tell it. It never touches a
thread, socket or clock: the loop in :mod:`hpsearch.scheduler.loop` feeds it events
and carries out the commands it returns, so tests drive it with fake workers.

Rules it keeps:

* Candidates are asked for ahead of need, so a free slot never waits on the strategy
  while another candidate could run.
* A worker runs the tasks it is given in the order it gets them, ``slots`` at a time:
  of its unfinished tasks, the ``slots`` oldest are running, the others wait in its
  prefetch queue. A task starts (for its time limit and its duration) when it is
  dispatched to a free slot or when the task ahead of it finishes.
* A lost worker's unfinished tasks go back to the front of the queue with the next
  attempt number. Only a task that was *running* there counts a death (a prefetched
  task that never started counts none); a task that died ``max_deaths`` times fails
  as data. A worker the scheduler asked to stop a task is not blamed on its tasks.
* ``fit_timeout``: a task running longer (since its first running copy started) is
  recorded as a failed fit, and the workers running it are told to abandon it
  (``Abandon``: a process is stopped and replaced, a thread is left behind and
  replaced).
* Stragglers: when a worker has a free slot and nothing is queued, a task that has
  run (or, not started, waited) longer than ``straggler_factor`` times the median
  duration of the search's finished tasks, and at least ``straggler_min_seconds``,
  is started again on that worker, those waiting unstarted first. At most two copies
  of a task run at once; the first result wins.
* The first result of a task is recorded; duplicates and late attempts are ignored.
* With an ``affinity`` function (pipeline prefix reuse), new tasks are queued grouped by
  (prefix, fold), and a free worker takes first a queued task whose (prefix, fold) it
  was sent before (its cache likely holds it), then one whose (prefix, fold) no worker
  was sent (so workers compute different prefixes), and only then one another worker
  holds (computing it again beats waiting idle). A lost worker's prefixes are
  forgotten with it. With ``affinity_exclusive`` (incremental training: the key names
  a configuration whose model one worker keeps), a (key, split) is held only by the
  worker it was last sent to.
* Time is passed in (``handle(event, now)``, ``Tick(now)``), never read here; time
  limits and stragglers are checked on ``Tick``.
* Batches (``batch_seconds``): a worker that takes several tasks in one message
  (``submit_many``) is sent ``DispatchBatch`` commands of ``batch`` tasks (fewer only
  when fewer are queued), each once it has room for a whole batch: it holds up to
  ``(slots + prefetch) × batch`` tasks. ``batch`` is 1 (tasks one by one) until
  ``batch_after`` results have reported their own time (fit plus score), then the
  largest power of two, at most ``max_batch``, whose expected time (that many times the
  median task time of the latest results) stays within ``batch_seconds``; it grows and
  shrinks as results come. The worker still runs the tasks of a batch one by one, in
  order, so every rule above (time limits, stragglers, losses) holds per task.
  ``Results`` (several results reported together) is handled as its events one after
  another, with one refill at the end.
* A candidate with ``n_samples`` runs its folds on the context's subsampled splits of
  that size: its tasks name the split (``split_offsets[n_samples] + fold``), so any
  worker evaluates them with no change.
* With a ``pruner``, a candidate whose completed folds show it cannot reach the best
  candidate of its resource (:mod:`hpsearch.scheduler.pruning`) has its remaining
  folds skipped: queued ones never run, results of running ones are ignored, and the
  candidate is reported as ``pruned``.
* Idle slots (``idle_asks``, a strategy with ``ask_idle``: ASHA): when the strategy
  has nothing to give until it hears more scores, nothing is queued, a worker has a
  slot running nothing and some regular candidate is still unfinished, the strategy is
  asked for work for those slots (``Ask(idle=True)``, enough candidates to cover
  them). Those tasks only ever go to a slot running nothing, queue behind every
  regular task (a regular task proposed later is dispatched first, and affinity never
  picks one of them over a regular task), do not count as the lookahead that keeps
  regular asks back, and are never asked for while only they are running, so they
  fill the end of a search without prolonging it by more than one of their tasks. An
  empty answer is not asked again before the next score.
"""

from __future__ import annotations

import logging
import itertools
import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import numpy as np

from ..errors import FitFailedError, TaskFailedError
from ..evaluation import FoldResult
from ..strategies.base import Candidate
from .pruning import PairedPruner
from ..workers.base import (
    PoolFailed,
    Results,
    SlotFreed,
    Task,
    TaskFailed,
    TaskFinished,
    Worker,
    WorkerJoined,
    WorkerLost,
)
from .capacity import FreeCapacity

logger = logging.getLogger(__name__)

__all__ = [
    "SchedulerState",
    "Proposed",
    "Tick",
    "Dispatch",
    "DispatchBatch",
    "Ask",
    "Tell",
    "CandidateDone",
    "Abort",
    "Abandon",
]


# -- events the loop adds to the workers' ------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposed:
    """The strategy answered an ``Ask``: new candidates, and whether it is finished.
    ``idle``: the answer to an ``Ask(idle=True)`` (``ask_idle``)."""

    candidates: list[Candidate]
    finished: bool
    idle: bool = False


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed with no other event (lets the loop stay responsive)."""

    now: float


# -- commands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatch:
    worker: Worker
    task: Task


@dataclass(frozen=True, slots=True)
class DispatchBatch:
    """Several tasks for one worker, in one message (``worker.submit_many``); the
    worker runs them one by one, in this order."""

    worker: Worker
    tasks: tuple[Task, ...]


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the strategy for up to ``n`` candidates: ``ask(n)``, or with ``idle`` its
    ``ask_idle(n)`` (work for slots that would otherwise sit idle)."""

    n: int
    idle: bool = False


@dataclass(frozen=True, slots=True)
class Tell:
    candidate_id: int
    score: float


@dataclass(frozen=True, slots=True)
class CandidateDone:
    candidate: Candidate
    results: list[FoldResult]
    score: float


@dataclass(frozen=True, slots=True)
class Abort:
    error: BaseException


@dataclass(frozen=True, slots=True)
class Abandon:
    """Give up ``task`` on ``worker`` (it ran past ``fit_timeout``): the worker stops it
    if it can (a process is killed and replaced) or leaves it behind (a thread)."""

    worker: Worker
    task: Task


Command = Union[Dispatch, DispatchBatch, Ask, Tell, CandidateDone, Abort, Abandon]


@dataclass(slots=True)
class _Copy:
    """One dispatch of a task to one worker."""

    worker: str
    task: Task  # with this dispatch's attempt number
    dispatched: float
    started: float | None = None
    abandoned: bool = False


@dataclass(slots=True)
class _TaskState:
    task: Task
    fold: int  # the CV fold (task.fold is the index of the split it runs on)
    copies: dict[str, _Copy] = field(default_factory=dict)  # worker name -> its copy
    deaths: int = 0
    dispatches: int = 0
    done: bool = False
    queued: bool = False  # its id is in the scheduler's queue

    @property
    def worker(self) -> str | None:
        """The worker of the latest copy, if any."""
        return next(reversed(self.copies), None)

    def live_copies(self) -> int:
        return sum(not c.abandoned for c in self.copies.values())


@dataclass(slots=True)
class _WorkerState:
    worker: Worker
    running: dict[int, _Copy] = field(default_factory=dict)  # task id -> copy, dispatch order
    stopping: bool = False  # told to abandon a task: its loss is not its tasks' fault
    held: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)  # (prefix, fold) sent to it
    batched: bool = False  # takes DispatchBatch (it has submit_many, and batching is on)
    scale: int = 1  # the search's batch size for a batched worker, else 1
    # A worker's slots and prefetch are fixed while it serves (the totals count them once).
    slots: int = field(init=False)
    capacity: int = field(init=False)  # (slots + prefetch) × scale

    def __post_init__(self) -> None:
        self.slots = self.worker.slots
        self.rescale(self.scale)

    def rescale(self, scale: int) -> None:
        self.scale = scale
        self.capacity = (self.slots + self.worker.prefetch) * scale

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)

    @property
    def idle_slots(self) -> int:
        return self.slots - len(self.running)

    def mark_started(self, now: float) -> None:
        """The ``slots`` oldest copies are running (a worker runs its tasks in order)."""
        left = self.slots
        for copy in self.running.values():
            if left <= 0:
                return
            if copy.started is None:
                copy.started = now
            left -= 1


class SchedulerState:
    """The pure scheduling state of one search.

    Parameters
    ----------
    n_folds : int
        CV folds per candidate.
    score_names : sequence of str
        The scorers' names; empty when they are only known from the results (a
        callable scoring that returns a dict), then results are not checked for them.
    score_key : str
        The scorer whose mean test score is told to the strategy.
    error_score : float or "raise"
        ``"raise"`` aborts at the first failed fit; a number is the score of a task
        that never ran to the end.
    return_train_score : bool
        Whether results carry train scores.
    max_deaths : int
        Times a task may die with the worker running it (or fail to run at all)
        before it fails as data: a task that crashes every worker it runs on (a
        segfault, out of memory) does not stop the search.
    lookahead : int
        Tasks kept queued beyond the free slots, so workers never wait on the strategy.
    known_results : mapping of (candidate_id, fold) -> FoldResult, optional
        Results already computed (by an earlier run of a resumed search): when such a
        candidate is proposed, these tasks are recorded as finished instead of queued.
    affinity : callable or None
        ``affinity(params)`` names a candidate's pipeline prefix (hashable); tasks with
        the same prefix and fold go preferably to the worker that computed it.
    affinity_memory : int
        (prefix, fold) pairs remembered per worker (the most recent), about what its
        cache can hold.
    affinity_exclusive : bool
        A (key, split) is held by one worker at most: the last one sent a task of it
        (incremental training, where the key names a model a worker keeps).
    fit_timeout : float or None
        Seconds a task may run; past that it is recorded as a failed fit and
        abandoned. None: no limit.
    straggler_factor, straggler_min_seconds : float
        A task running longer than both ``straggler_factor`` times the median
        duration of the finished tasks and ``straggler_min_seconds`` is started
        again on a worker with nothing else to do. ``straggler_factor=0`` turns
        this off.
    split_offsets : mapping of int to int, optional
        For each training-set size a candidate may ask for (``Candidate.n_samples``),
        the index of its first fold among the context's splits.
    pruner : PairedPruner, optional
        Skip the remaining folds of candidates that cannot reach the best one.
    batch_seconds : float or None
        Target duration of a batch of tasks sent in one message to a worker that
        takes batches (``submit_many``); None sends every task on its own.
    max_batch : int
        Most tasks in one batch.
    batch_after : int
        Results whose time must be known before tasks are batched.
    idle_asks : bool
        Ask the strategy for work for idle slots (``Ask(idle=True)``, see above); only
        for a strategy that has ``ask_idle``.
    """

    def __init__(
        self,
        n_folds: int,
        score_names: Sequence[str] = ("score",),
        score_key: str = "score",
        *,
        error_score: float | str = np.nan,
        return_train_score: bool = False,
        max_deaths: int = 3,
        lookahead: int = 2,
        known_results: Mapping[tuple[int, int], FoldResult] | None = None,
        affinity: Callable[[Mapping[str, Any]], Hashable] | None = None,
        affinity_memory: int = 1024,
        affinity_exclusive: bool = False,
        fit_timeout: float | None = None,
        straggler_factor: float = 3.0,
        straggler_min_seconds: float = 0.5,
        split_offsets: Mapping[int, int] | None = None,
        pruner: PairedPruner | None = None,
        batch_seconds: float | None = None,
        max_batch: int = 64,
        batch_after: int = 8,
        idle_asks: bool = False,
    ) -> None:
        if score_names and score_key not in score_names:
            raise ValueError(f"score_key {score_key!r} is not one of {list(score_names)}")
        self.n_folds = n_folds
        self.score_names = tuple(score_names)
        self._score_set = set(self.score_names)
        self.score_key = score_key
        self.raise_on_error = error_score == "raise"
        self.error_score = np.nan if self.raise_on_error else float(error_score)
        self.return_train_score = return_train_score
        self.max_deaths = max_deaths
        self.lookahead = lookahead
        self.affinity = affinity
        self.affinity_memory = affinity_memory
        self.affinity_exclusive = affinity_exclusive
        self.groups: dict[int, Hashable] = {}  # task id -> (prefix, fold), with affinity
        self.fit_timeout = fit_timeout
        self.straggler_factor = straggler_factor
        self.straggler_min_seconds = straggler_min_seconds
        self.now = 0.0
        self.durations: deque[float] = deque(maxlen=256)  # of recent successful tasks
        self.batch_seconds = batch_seconds
        self.max_batch = max(1, max_batch)
        self.batch_after = batch_after
        self.batch = 1  # tasks per DispatchBatch (see _resize_batch)
        self.task_seconds: deque[float] = deque(maxlen=64)  # fit + score time the latest results reported
        self.candidates: dict[int, Candidate] = {}
        self.fold_results: dict[int, list[FoldResult | None]] = {}
        self.tasks: dict[int, _TaskState] = {}
        self.queue: deque[int] = deque()
        self.workers: dict[str, _WorkerState] = {}
        # Kept up to date on every change, so a dispatch costs O(log workers).
        self._free = FreeCapacity()
        self._stale: set[str] = set()  # workers whose free capacity _free has yet to hear (see _pick)
        self._missing: dict[int, int] = {}  # candidate id -> folds not recorded yet
        self._in_flight = 0
        self._capacity = 0
        self.asking = False
        self.starved = False  # the strategy had nothing to give until it hears more scores
        self.told_since_ask = False  # a Tell was issued after the pending Ask
        self.idle_asks = idle_asks
        self.idle_starved = False  # ask_idle had nothing to give until it hears more scores
        self.idle_candidates: set[int] = set()  # candidates from ask_idle (their tasks: _idle)
        self._regular_open = 0  # candidates not from ask_idle, proposed and not complete
        self.strategy_finished = False
        self.completed: list[int] = []
        self.n_tasks_done = 0
        self.aborted: BaseException | None = None
        self.known_results = dict(known_results or {})
        self.split_offsets = dict(split_offsets or {})
        self.pruner = pruner
        self.pruned: set[int] = set()
        self._pruned_score: dict[int, float] = {}
        self._best: dict[tuple[Any, Any], tuple[float, list[float]]] = {}  # per resource: mean, fold scores
        self._open: dict[tuple[Any, Any], set[int]] = {}  # per resource: candidates not complete

    # -- queries ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def done(self) -> bool:
        """True when the search is over: aborted, or nothing left to ask, queue or run."""
        if self.aborted is not None:
            return True
        return (
            self.strategy_finished
            and not self.asking
            and not self.queue
            and len(self.completed) == len(self.candidates)
        )

    @property
    def stalled(self) -> bool:
        """The strategy has nothing to propose and nothing is pending to change that."""
        return (
            self.starved
            and not self.asking
            and not self.strategy_finished
            and not self.queue
            and len(self.completed) == len(self.candidates)
        )

    def results(self) -> list[tuple[Candidate, list[FoldResult]]]:
        """Completed candidates in candidate-id order, with their fold results."""
        return [
            (self._reported(cid), list(self.fold_results[cid]))  # type: ignore[arg-type]
            for cid in sorted(self.completed)
        ]

    def leftovers(self) -> list[tuple[Worker, Task]]:
        """Started copies still on a worker (stragglers' losers, tasks of an aborted
        search): what to abandon when the search ends, so no work of it runs on."""
        return [
            (ws.worker, copy.task)
            for ws in self.workers.values()
            for copy in ws.running.values()
            if copy.started is not None and not copy.abandoned
        ]

    def _reported(self, cid: int) -> Candidate:
        cand = self.candidates[cid]
        return replace(cand, tags={**cand.tags, "pruned": True}) if cid in self.pruned else cand

    # -- transitions --------------------------------------------------------------------

    def start(self, now: float | None = None) -> list[Command]:
        if now is not None:
            self.now = max(self.now, now)
        return self._refill()

    def handle(self, event: Any, now: float | None = None) -> list[Command]:
        """Apply ``event``, which happened at ``now`` (default: the last time seen)."""
        if now is not None:
            self.now = max(self.now, now)
        if self.aborted is not None:
            return []
        if isinstance(event, TaskFinished):
            commands = self._on_finished(event)
        elif isinstance(event, Results):
            commands = []
            for each in event.events:
                commands += self._on_finished(each) if isinstance(each, TaskFinished) else self._on_task_failed(each)
                if self.aborted is not None:
                    return commands
        elif isinstance(event, Proposed):
            commands = self._on_proposed(event)
        elif isinstance(event, WorkerJoined):
            commands = self._on_joined(event)
        elif isinstance(event, WorkerLost):
            commands = self._on_lost(event)
        elif isinstance(event, TaskFailed):
            commands = self._on_task_failed(event)
        elif isinstance(event, PoolFailed):
            commands = self._abort(event.error)
        elif isinstance(event, SlotFreed):
            commands = self._on_slot_freed(event)
        elif isinstance(event, Tick):
            self.now = max(self.now, event.now)
            commands = self._check_time_limits()
        else:
            raise TypeError(f"unknown scheduler event {event!r}")
        if self.aborted is None:
            if self.batch_seconds is not None and isinstance(event, (TaskFinished, Results)):
                self._resize_batch()
            commands += self._refill()
            if isinstance(event, Tick):
                commands += self._duplicate_stragglers()
        return commands

    def _on_joined(self, event: WorkerJoined) -> list[Command]:
        name = event.worker.name
        if name in self.workers:
            logger.warning("worker %r joined twice; keeping the first", name)
            return []
        state = self.workers[name] = _WorkerState(event.worker)
        if self.batch_seconds is not None and callable(getattr(event.worker, "submit_many", None)):
            state.batched = True
            state.rescale(self.batch)
        self._capacity += state.capacity
        self._free.update(name, state.free)
        logger.info("worker %s joined with %d slot(s)", name, event.worker.slots)
        return []

    def _on_proposed(self, event: Proposed) -> list[Command]:
        self.asking = False
        self.strategy_finished = event.finished
        # An empty answer means "wait for scores" only if no score was told after the
        # Ask went out: a Tell issued meanwhile reaches the strategy after that Ask.
        empty = not event.candidates and not event.finished and not self.told_since_ask
        if event.idle:
            self.idle_starved = empty
            self.idle_candidates.update(cand.id for cand in event.candidates)
        else:
            self.starved = empty
            self._regular_open += len(event.candidates)
        commands: list[Command] = []
        offsets: dict[int, int] = {}
        for cand in event.candidates:
            if cand.id in self.candidates:
                raise ValueError(f"the strategy proposed candidate id {cand.id} twice")
            if cand.n_samples is None:
                offset = 0
            elif cand.n_samples in self.split_offsets:
                offset = self.split_offsets[cand.n_samples]
            else:
                raise ValueError(
                    f"candidate {cand.id} asks for n_samples={cand.n_samples}, which the context "
                    f"has no subsampled splits for (it has {sorted(self.split_offsets)})"
                )
            self.candidates[cand.id] = cand
            self.fold_results[cand.id] = [None] * self.n_folds
            self._missing[cand.id] = self.n_folds
            self._open.setdefault(self._group(cand), set()).add(cand.id)
            offsets[cand.id] = offset
        new_tasks = [(cand, fold) for cand in event.candidates for fold in range(self.n_folds)]
        if self.affinity is not None:
            # Group by prefix (in order of first appearance), then fold, then candidate:
            # the tasks sharing a (prefix, fold) follow each other.
            prefixes = {cand.id: self.affinity(cand.params) for cand in event.candidates}
            first = {p: i for i, p in reversed(list(enumerate(prefixes.values())))}
            new_tasks.sort(key=lambda cf: (first[prefixes[cf[0].id]], offsets[cf[0].id] + cf[1]))
        n_folds, tasks, queue, pruned = self.n_folds, self.tasks, self.queue, self.pruned
        for cand, fold in new_tasks:
            cid = cand.id
            task_id = cid * n_folds + fold
            split = offsets[cid] + fold  # the split it runs on (a subsampled copy, or the fold)
            ts = tasks[task_id] = _TaskState(Task(task_id, cid, split, cand.params), fold)
            if cid in pruned:  # pruned by a known result recorded just before
                commands += self._record(ts, self._skipped())
                continue
            known = self.known_results.pop((cid, fold), None) if self.known_results else None
            if known is not None and self._malformed(known) is None:
                if self.raise_on_error and known.error is not None:
                    return self._abort(FitFailedError(f"a fit failed and error_score='raise':\n{known.error}"))
                commands += self._record(ts, known)
                continue
            if self.affinity is not None:
                self.groups[task_id] = (prefixes[cid], split)
            queue.append(task_id)
            ts.queued = True
        if self.idle_candidates and not event.idle:  # regular tasks go ahead of queued idle-slot ones
            self.queue = deque([*(t for t in self.queue if not self._idle(t)),
                                *(t for t in self.queue if self._idle(t))])
        return commands

    def _release(self, worker: str, task_id: int, attempt: int, ts: _TaskState | None = None) -> _Copy | None:
        """Forget the copy of ``task_id`` (``ts``, if already looked up) that ``worker``
        held (if that attempt); the tasks waiting behind it on that worker start."""
        if ts is None:
            ts = self.tasks.get(task_id)
            if ts is None:
                return None
        copy = ts.copies.get(worker)
        if copy is None or copy.task.attempt != attempt:
            return None
        del ts.copies[worker]
        state = self.workers.get(worker)
        if state is not None and state.running.pop(task_id, None) is not None:
            self._in_flight -= 1
            self._stale.add(worker)
            state.mark_started(self.now)
        return copy

    def _on_finished(self, event: TaskFinished) -> list[Command]:
        ts = self.tasks.get(event.task_id)
        copy = None if ts is None else self._release(event.worker, event.task_id, event.attempt, ts)
        if ts is None:
            logger.warning("result for unknown task %d from %s ignored", event.task_id, event.worker)
            return []
        if ts.done:
            logger.debug("duplicate result for task %d (attempt %d) ignored", event.task_id, event.attempt)
            return []
        problem = self._malformed(event.result)
        if problem is not None:  # a worker bug or a hostile peer: never a crash of the search
            logger.error("result for task %d from %s ignored: %s", event.task_id, event.worker, problem)
            if copy is not None:
                return self._requeue([event.task_id], f"worker {event.worker} sent a malformed result")
            return []
        if self.raise_on_error and event.result.error is not None:
            exc = event.result.exception
            if exc is None:
                exc = FitFailedError(
                    f"a fit failed and error_score='raise':\n{event.result.error}"
                )
            return self._abort(exc)
        if copy is not None and copy.started is not None and event.result.error is None:
            self.durations.append(self.now - copy.started)
        if event.result.error is None:
            self.task_seconds.append(event.result.fit_time + event.result.score_time)
        return self._record(ts, event.result)

    def _malformed(self, result: FoldResult) -> str | None:
        if self.score_names and result.test_scores.keys() != self._score_set:
            return f"test scores for {sorted(result.test_scores)}, expected {sorted(self.score_names)}"
        if self.return_train_score and (
            result.train_scores is None
            or (self.score_names and result.train_scores.keys() != self._score_set)
        ):
            return "train scores missing"
        return None

    def _record(self, ts: _TaskState, result: FoldResult) -> list[Command]:
        # Other copies of the task (a straggler's twin, a running fold of a pruned
        # candidate) stay on their workers until they report: their slots are busy
        # until then, and _release frees them as their (ignored) results arrive.
        ts.done = True
        if ts.queued:  # a requeued copy still waiting, a pruned candidate's fold
            self.queue.remove(ts.task.task_id)
            ts.queued = False
        self.n_tasks_done += 1
        cid = ts.task.candidate_id
        slots = self.fold_results[cid]
        slots[ts.fold] = result
        missing = self._missing[cid] = self._missing[cid] - 1
        if missing:
            if self.pruner is not None and cid not in self.pruned:
                return self._maybe_prune(cid)
            return []
        results: list[FoldResult] = slots  # type: ignore[assignment]
        self.completed.append(cid)
        self.starved = False  # the strategy hears a new score: it may have more to give
        self.idle_starved = False
        self.told_since_ask = True
        if cid not in self.idle_candidates:
            self._regular_open -= 1
        group = self._group(self.candidates[cid])
        self._open.get(group, set()).discard(cid)
        commands: list[Command] = []
        if cid in self.pruned:
            score = self._pruned_score[cid]
        else:
            fold_scores = [r.test_scores.get(self.score_key, np.nan) for r in results]
            score = float(np.mean(fold_scores))
            if self.pruner is not None and score > self._best.get(group, (-math.inf, []))[0]:
                self._best[group] = (score, fold_scores)
                for other in sorted(self._open.get(group, ())):
                    if other not in self.pruned:
                        commands += self._maybe_prune(other)
        return [Tell(cid, score), CandidateDone(self._reported(cid), results, score), *commands]

    # -- pruning --------------------------------------------------------------------------

    @staticmethod
    def _group(cand: Candidate) -> tuple[Any, Any]:
        """Candidates are compared only with others given the same resource."""
        return cand.resource, cand.n_samples

    def _maybe_prune(self, cid: int) -> list[Command]:
        assert self.pruner is not None
        best = self._best.get(self._group(self.candidates[cid]))
        if best is None:
            return []
        scores = [None if r is None else r.test_scores.get(self.score_key, np.nan) for r in self.fold_results[cid]]
        if not self.pruner.should_prune(scores, best[1]):
            return []
        done = [s for s in scores if s is not None]
        logger.debug("candidate %d pruned after %d of %d folds", cid, len(done), self.n_folds)
        self.pruned.add(cid)
        self._pruned_score[cid] = float(np.mean(done))
        commands: list[Command] = []
        for fold in range(self.n_folds):
            ts = self.tasks.get(cid * self.n_folds + fold)  # None: not yet made (see _on_proposed)
            if ts is not None and not ts.done:  # a running task keeps its slot until its (ignored) result arrives
                commands += self._record(ts, self._skipped())
        return commands

    def _skipped(self) -> FoldResult:
        """The result of a fold skipped by pruning: no score, no error."""
        return FoldResult(
            test_scores=dict.fromkeys(self.score_names, np.nan),
            train_scores=dict.fromkeys(self.score_names, np.nan) if self.return_train_score else None,
            fit_time=0.0,
            score_time=0.0,
            n_test_samples=0,
        )

    def _requeue(self, task_ids: list[int], reason: str, *, blame: set[int] | None = None) -> list[Command]:
        """Put tasks that are no longer running anywhere back at the front of the queue.

        Each one in ``blame`` (default: all) counts a death; a task at ``max_deaths``
        fails as data instead. A task with a copy still running elsewhere is left to it.
        """
        commands: list[Command] = []
        for task_id in sorted(task_ids, reverse=True):  # keep their order at the front
            ts = self.tasks[task_id]
            if ts.done:
                continue
            if blame is None or task_id in blame:
                ts.deaths += 1
            if ts.live_copies() or ts.queued:
                continue
            if ts.deaths >= self.max_deaths:
                error = TaskFailedError(
                    f"task {task_id} (candidate {ts.task.candidate_id}, fold {ts.fold}, "
                    f"params {ts.task.params!r}) was lost {ts.deaths} times: {reason}. "
                    "It may crash the workers that run it (out of memory, a segfault in native code); "
                    "max_task_deaths sets how many times a task may be lost"
                )
                if self.raise_on_error:
                    return self._abort(error)
                logger.error("%s", error)
                commands += self._record(ts, self._failure(ts.task, f"TaskFailedError: {error}"))
                continue
            if self._idle(task_id):
                self.queue.append(task_id)  # behind the regular tasks, as always
            else:
                self.queue.appendleft(task_id)
            ts.queued = True
        return commands

    def _failure(self, task: Task, text: str) -> FoldResult:
        """The result of a task that never ran to the end: shaped like a failed fit."""
        names = self.score_names or (self.score_key,)
        return FoldResult.failed(names, self.error_score, self.return_train_score, text)

    def _on_lost(self, event: WorkerLost) -> list[Command]:
        state = self.workers.pop(event.worker, None)
        if state is None:
            return []
        self._in_flight -= len(state.running)
        self._capacity -= state.capacity
        self._free.remove(event.worker)
        self._stale.discard(event.worker)
        # Only tasks that were running there may have killed it; tasks waiting in its
        # prefetch queue go back without a death, and so does everything of a worker
        # the scheduler itself asked to stop a task.
        blame = set() if state.stopping else {
            task_id for task_id, copy in state.running.items() if copy.started is not None and not copy.abandoned
        }
        for task_id in state.running:
            self.tasks[task_id].copies.pop(event.worker, None)
        logger.warning(
            "worker %s lost (%s); requeueing %d task(s), %d of them running",
            event.worker, event.reason, len(state.running), len(blame),
        )
        return self._requeue(list(state.running), f"worker {event.worker} lost ({event.reason})", blame=blame)

    def _on_task_failed(self, event: TaskFailed) -> list[Command]:
        if self._release(event.worker, event.task_id, event.attempt) is None:
            return []  # stale: that attempt was already requeued (its worker was lost)
        ts = self.tasks[event.task_id]
        if ts.done:
            return []
        logger.warning("worker %s could not run task %d: %s", event.worker, event.task_id, event.error)
        return self._requeue([event.task_id], f"worker {event.worker} could not run it: {event.error}")

    def _on_slot_freed(self, event: SlotFreed) -> list[Command]:
        ts = self.tasks.get(event.task_id)
        copy = ts.copies.get(event.worker) if ts is not None else None
        if copy is not None and copy.abandoned:
            self._release(event.worker, event.task_id, copy.task.attempt)
        return []

    def _abort(self, error: BaseException) -> list[Command]:
        self.aborted = error
        for task_id in self.queue:
            self.tasks[task_id].queued = False
        self.queue.clear()
        return [Abort(error)]

    def _pick(self) -> tuple[_WorkerState, int] | None:
        """The worker to dispatch to next and the queue index of its task, or None
        when no worker has room."""
        if self._stale:  # free capacity changed since (results, dispatches): told once per worker
            for name in self._stale:
                self._free.update(name, self.workers[name].free)
            self._stale.clear()
        most = self._free.most()
        if most is None:
            return None
        if self.affinity is None:
            return self.workers[most], 0
        free = [w for w in self.workers.values() if w.free > 0]
        free.sort(key=lambda w: w.free, reverse=True)  # stable: ties keep join order
        queued = self._choosable()
        for index, task_id in enumerate(queued):
            group = self.groups[task_id]
            for worker in free:
                if group in worker.held:
                    return worker, index
        for index, task_id in enumerate(queued):
            group = self.groups[task_id]
            if not any(group in w.held for w in self.workers.values()):
                return free[0], index
        return free[0], 0

    def _index_for(self, worker: _WorkerState) -> int:
        """The queue index of the next task for ``worker`` (the order of :meth:`_pick`)."""
        if self.affinity is None:
            return 0
        queued = self._choosable()
        for index, task_id in enumerate(queued):
            if self.groups[task_id] in worker.held:
                return index
        for index, task_id in enumerate(queued):
            group = self.groups[task_id]
            if not any(group in w.held for w in self.workers.values()):
                return index
        return 0

    def _regular_queued(self) -> int:
        """Queued tasks that are not idle-slot ones (those are all behind them)."""
        if not self.idle_candidates:
            return len(self.queue)
        return sum(not self._idle(task_id) for task_id in self.queue)

    def _idle(self, task_id: int) -> bool:
        """Whether ``task_id`` is a task of a candidate from ``ask_idle``."""
        return task_id // self.n_folds in self.idle_candidates

    def _choosable(self) -> Sequence[int]:
        """The queued tasks affinity may choose among: the regular ones while there are
        any (an idle-slot task whose model a free worker holds must not pass them)."""
        regular = self._regular_queued()
        if regular == len(self.queue) or regular == 0:
            return self.queue
        return list(itertools.islice(self.queue, regular))

    def _take(self, index: int) -> _TaskState:
        """Take the task at ``index`` out of the queue."""
        ts = self.tasks[self.queue[index]]
        del self.queue[index]
        ts.queued = False
        return ts

    def _resize_batch(self) -> None:
        """Size batches from the latest task times: the largest power of two whose
        expected time stays within ``batch_seconds`` (1 until enough are known)."""
        assert self.batch_seconds is not None
        batch = 1
        if len(self.task_seconds) >= self.batch_after:
            typical = statistics.median(self.task_seconds)
            fits = self.batch_seconds / typical if typical > 0 else self.max_batch
            while batch * 2 <= min(fits, self.max_batch):
                batch *= 2
        if batch == self.batch:
            return
        logger.debug("batches of %d task(s) (was %d)", batch, self.batch)
        self.batch = batch
        for ws in self.workers.values():
            if ws.batched:
                self._capacity -= ws.capacity
                ws.rescale(batch)
                self._capacity += ws.capacity
                self._stale.add(ws.worker.name)

    def _hold(self, worker: _WorkerState, group: Hashable) -> None:
        worker.held[group] = None
        worker.held.move_to_end(group)
        while len(worker.held) > self.affinity_memory:
            worker.held.popitem(last=False)

    # -- time -----------------------------------------------------------------------------

    def _check_time_limits(self) -> list[Command]:
        """A task running past ``fit_timeout`` (since its first running copy started) is
        recorded as a failed fit and every copy of it is abandoned."""
        if self.fit_timeout is None:
            return []
        commands: list[Command] = []
        late: list[_TaskState] = []
        for ws in self.workers.values():
            for task_id, copy in ws.running.items():
                if copy.abandoned or copy.started is None or self.now - copy.started <= self.fit_timeout:
                    continue
                ts = self.tasks[task_id]
                if not any(ts is t for t in late):
                    late.append(ts)
        for ts in late:
            for name, copy in ts.copies.items():
                if copy.started is not None and not copy.abandoned:
                    copy.abandoned = True
                    self.workers[name].stopping = True
                    commands.append(Abandon(self.workers[name].worker, copy.task))
            if ts.done:
                continue
            text = (
                f"FitTimeoutError: the fit of candidate {ts.task.candidate_id} (params "
                f"{ts.task.params!r}) on fold {ts.fold} ran past fit_timeout="
                f"{self.fit_timeout:g} s; it was stopped"
            )
            logger.warning("%s", text)
            if self.raise_on_error:
                return commands + self._abort(FitFailedError(f"a fit failed and error_score='raise':\n{text}"))
            commands += self._record(ts, self._failure(ts.task, text))
        return commands

    def straggler_threshold(self) -> float | None:
        """Seconds after which a task counts as a straggler (None: not known yet)."""
        if self.straggler_factor <= 0 or len(self.durations) < 5:
            return None
        return max(self.straggler_factor * statistics.median(self.durations), self.straggler_min_seconds)

    def _duplicate_stragglers(self) -> list[Command]:
        """Start a second copy of the slowest tasks on workers that have nothing to do."""
        if self.queue or not any(ws.idle_slots > 0 for ws in self.workers.values()):
            return []
        threshold = self.straggler_threshold()
        if threshold is None:
            return []
        late = []
        for ws in self.workers.values():
            for task_id, copy in ws.running.items():
                waited = self.now - (copy.started if copy.started is not None else copy.dispatched)
                ts = self.tasks[task_id]
                if waited > threshold and not copy.abandoned and not ts.done and len(ts.copies) == 1:
                    late.append((copy.started is not None, -waited, task_id))
        commands: list[Command] = []
        # Tasks stuck in a slow worker's queue first (moving them costs nothing; a task
        # running long may itself be the trouble), then the longest wait, the oldest task.
        for _, minus_waited, task_id in sorted(late):
            waited = -minus_waited
            ts = self.tasks[task_id]
            idle = [ws for ws in self.workers.values() if ws.idle_slots > 0 and ws.worker.name not in ts.copies]
            if not idle:
                continue
            target = max(idle, key=lambda w: w.idle_slots)
            logger.info("task %d has waited %.1f s (straggler after %.1f s): starting it again on %s",
                        task_id, waited, threshold, target.worker.name)
            commands.append(self._dispatch(ts, target))
        return commands

    # -- dispatching ------------------------------------------------------------------------

    def _dispatch(self, ts: _TaskState, target: _WorkerState) -> Dispatch:
        return Dispatch(target.worker, self._send(ts, target))

    def _send(self, ts: _TaskState, target: _WorkerState) -> Task:
        """Record ``ts`` as dispatched to ``target``; the task to send it."""
        task = ts.task
        if ts.dispatches:
            task = replace(task, attempt=ts.dispatches)  # every field kept: the split, the params
        ts.dispatches += 1
        name = target.worker.name
        copy = _Copy(name, task, dispatched=self.now)
        ts.copies[name] = copy
        target.running[task.task_id] = copy
        self._in_flight += 1
        self._stale.add(name)
        if self.affinity is not None and task.task_id in self.groups:
            group = self.groups[task.task_id]
            if self.affinity_exclusive:
                for other in self.workers.values():
                    if other is not target:
                        other.held.pop(group, None)
            self._hold(target, group)
        target.mark_started(self.now)
        return task

    def _refill(self) -> list[Command]:
        commands: list[Command] = []
        # Dispatch: to the worker with the most free capacity, one task at a time, or a
        # batch of tasks to a worker that takes batches.
        while self.queue:
            pick = self._pick()
            if pick is None:
                break
            target, index = pick
            if self._idle(self.queue[index]):
                # Only into a slot running nothing, one by one (never in a worker's
                # prefetch queue or a batch, where a regular task would wait behind it).
                task_id = self.queue[index]
                spare = [w for w in self.workers.values() if w.idle_slots > 0]
                if not spare:
                    break
                group = self.groups.get(task_id)
                target = max(spare, key=lambda w: (group is not None and group in w.held, w.idle_slots))
                commands.append(self._dispatch(self._take(index), target))
                continue
            if target.batched and target.free < min(self.batch, self._regular_queued()):
                # It still holds more than a batch: the next one goes out whole, once
                # that many have finished (a worker with room for single tasks may
                # take one meanwhile).
                single = next((w for w in self.workers.values() if not w.batched and w.free > 0), None)
                if single is None:
                    break
                target, index = single, self._index_for(single)
            ts = self._take(index)
            if not target.batched or self.batch == 1:
                commands.append(self._dispatch(ts, target))
                continue
            tasks = [self._send(ts, target)]
            room = min(self.batch, target.free + 1)
            while self.queue and len(tasks) < room:
                index = self._index_for(target)
                if self._idle(self.queue[index]):  # never in a batch (see above)
                    break
                tasks.append(self._send(self._take(index), target))
            commands.append(Dispatch(target.worker, tasks[0]) if len(tasks) == 1
                            else DispatchBatch(target.worker, tuple(tasks)))
        # Ask ahead, so that the queue covers every free slot plus some lookahead.
        if not (self.asking or self.strategy_finished or self.starved):
            # Idle-slot tasks queued do not count: they never fill a prefetch queue.
            wanted = max(self._capacity, 1) + self.lookahead - self.in_flight - self._regular_queued()
            if wanted > 0:
                self.asking = True
                self.told_since_ask = False
                commands.append(Ask(math.ceil(wanted / self.n_folds)))
        elif (self.idle_asks and self.starved and not (self.asking or self.strategy_finished or self.idle_starved)
              and not self.queue and self._regular_open > 0):
            idle = sum(max(0, ws.idle_slots) for ws in self.workers.values())
            if idle > 0:
                self.asking = True
                self.told_since_ask = False
                commands.append(Ask(math.ceil(idle / self.n_folds), idle=True))
        return commands
