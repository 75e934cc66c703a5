"""The scheduling state machine: events in, commands out, no I/O.

:class:`SchedulerState` turns candidates into (candidate, fold) tasks, hands them to
workers up to each worker's capacity, aggregates fold results per candidate, and
decides when to ask the strategy for more and what to tell it. It never touches a
thread, socket or clock: the loop in :mod:`hpsearch.scheduler.loop` feeds it events
and carries out the commands it returns, so tests drive it with fake workers.

Rules it keeps:

* Candidates are asked for ahead of need, so a free slot never waits on the strategy
  while another candidate could run.
* A lost worker's unfinished tasks go back to the front of the queue with the next
  attempt number; a task whose workers were lost ``max_deaths`` times fails.
* The first result of a task is recorded; duplicates and late attempts are ignored.
* With an ``affinity`` function (pipeline prefix reuse), new tasks are queued grouped by
  (prefix, fold), and a free worker takes first a queued task whose (prefix, fold) it
  was sent before (its cache likely holds it), then one whose (prefix, fold) no worker
  was sent (so workers compute different prefixes), and only then one another worker
  holds (computing it again beats waiting idle). A lost worker's prefixes are
  forgotten with it.
* A candidate with ``n_samples`` runs its folds on the context's subsampled splits of
  that size: its tasks name the split (``split_offsets[n_samples] + fold``), so any
  worker evaluates them with no change.
* With a ``pruner``, a candidate whose completed folds show it cannot reach the best
  candidate of its resource (:mod:`hpsearch.scheduler.pruning`) has its remaining
  folds skipped: queued ones never run, results of running ones are ignored, and the
  candidate is reported as ``pruned``.
"""

from __future__ import annotations

import logging
import math
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
    "Ask",
    "Tell",
    "CandidateDone",
    "Abort",
]


# -- events the loop adds to the workers' ------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposed:
    """The strategy answered an ``Ask``: new candidates, and whether it is finished."""

    candidates: list[Candidate]
    finished: bool


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
class Ask:
    n: int


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


Command = Union[Dispatch, Ask, Tell, CandidateDone, Abort]


@dataclass
class _TaskState:
    task: Task
    fold: int  # the CV fold (task.fold is the index of the split it runs on)
    worker: str | None = None
    deaths: int = 0
    done: bool = False


@dataclass
class _WorkerState:
    worker: Worker
    running: set[int] = field(default_factory=set)
    held: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)  # (prefix, fold) sent to it

    @property
    def capacity(self) -> int:
        return self.worker.slots + self.worker.prefetch

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)


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
        Lost workers a task survives before it fails.
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
    split_offsets : mapping of int to int, optional
        For each training-set size a candidate may ask for (``Candidate.n_samples``),
        the index of its first fold among the context's splits.
    pruner : PairedPruner, optional
        Skip the remaining folds of candidates that cannot reach the best one.
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
        split_offsets: Mapping[int, int] | None = None,
        pruner: PairedPruner | None = None,
    ) -> None:
        if score_names and score_key not in score_names:
            raise ValueError(f"score_key {score_key!r} is not one of {list(score_names)}")
        self.n_folds = n_folds
        self.score_names = tuple(score_names)
        self.score_key = score_key
        self.raise_on_error = error_score == "raise"
        self.error_score = np.nan if self.raise_on_error else float(error_score)
        self.return_train_score = return_train_score
        self.max_deaths = max_deaths
        self.lookahead = lookahead
        self.affinity = affinity
        self.affinity_memory = affinity_memory
        self.groups: dict[int, Hashable] = {}  # task id -> (prefix, fold), with affinity
        self.candidates: dict[int, Candidate] = {}
        self.fold_results: dict[int, list[FoldResult | None]] = {}
        self.tasks: dict[int, _TaskState] = {}
        self.queue: deque[int] = deque()
        self.workers: dict[str, _WorkerState] = {}
        # Kept up to date on every change, so a dispatch costs O(log workers).
        self._free = FreeCapacity()
        self._in_flight = 0
        self._capacity = 0
        self.asking = False
        self.starved = False  # the strategy had nothing to give until it hears more scores
        self.told_since_ask = False  # a Tell was issued after the pending Ask
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

    def _reported(self, cid: int) -> Candidate:
        cand = self.candidates[cid]
        return replace(cand, tags={**cand.tags, "pruned": True}) if cid in self.pruned else cand

    # -- transitions --------------------------------------------------------------------

    def start(self) -> list[Command]:
        return self._refill()

    def handle(self, event: Any) -> list[Command]:
        if self.aborted is not None:
            return []
        if isinstance(event, TaskFinished):
            commands = self._on_finished(event)
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
        elif isinstance(event, Tick):
            commands = []
        else:
            raise TypeError(f"unknown scheduler event {event!r}")
        if self.aborted is None:
            commands += self._refill()
        return commands

    def _on_joined(self, event: WorkerJoined) -> list[Command]:
        name = event.worker.name
        if name in self.workers:
            logger.warning("worker %r joined twice; keeping the first", name)
            return []
        state = self.workers[name] = _WorkerState(event.worker)
        self._capacity += state.capacity
        self._free.update(name, state.free)
        logger.info("worker %s joined with %d slot(s)", name, event.worker.slots)
        return []

    def _on_proposed(self, event: Proposed) -> list[Command]:
        self.asking = False
        self.strategy_finished = event.finished
        # An empty answer means "wait for scores" only if no score was told after the
        # Ask went out: a Tell issued meanwhile reaches the strategy after that Ask.
        self.starved = not event.candidates and not event.finished and not self.told_since_ask
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
            self._open.setdefault(self._group(cand), set()).add(cand.id)
            offsets[cand.id] = offset
        new_tasks = [(cand, fold) for cand in event.candidates for fold in range(self.n_folds)]
        if self.affinity is not None:
            # Group by prefix (in order of first appearance), then fold, then candidate:
            # the tasks sharing a (prefix, fold) follow each other.
            prefixes = {cand.id: self.affinity(cand.params) for cand in event.candidates}
            first = {p: i for i, p in reversed(list(enumerate(prefixes.values())))}
            new_tasks.sort(key=lambda cf: (first[prefixes[cf[0].id]], offsets[cf[0].id] + cf[1]))
        for cand, fold in new_tasks:
            task_id = cand.id * self.n_folds + fold
            split = offsets[cand.id] + fold  # the split it runs on (a subsampled copy, or the fold)
            ts = self.tasks[task_id] = _TaskState(Task(task_id, cand.id, split, cand.params), fold)
            if cand.id in self.pruned:  # pruned by a known result recorded just before
                commands += self._record(ts, self._skipped())
                continue
            known = self.known_results.pop((cand.id, fold), None) if self.known_results else None
            if known is not None and self._malformed(known) is None:
                if self.raise_on_error and known.error is not None:
                    return self._abort(FitFailedError(f"a fit failed and error_score='raise':\n{known.error}"))
                commands += self._record(ts, known)
                continue
            if self.affinity is not None:
                self.groups[task_id] = (prefixes[cand.id], split)
            self.queue.append(task_id)
        return commands

    def _release(self, worker: str | None, task_id: int) -> None:
        state = self.workers.get(worker) if worker is not None else None
        if state is not None and task_id in state.running:
            state.running.discard(task_id)
            self._in_flight -= 1
            self._free.update(state.worker.name, state.free)

    def _on_finished(self, event: TaskFinished) -> list[Command]:
        self._release(event.worker, event.task_id)
        ts = self.tasks.get(event.task_id)
        if ts is None:
            logger.warning("result for unknown task %d from %s ignored", event.task_id, event.worker)
            return []
        if ts.done:
            logger.debug("duplicate result for task %d (attempt %d) ignored", event.task_id, event.attempt)
            return []
        problem = self._malformed(event.result)
        if problem is not None:  # a worker bug or a hostile peer: never a crash of the search
            logger.error("result for task %d from %s ignored: %s", event.task_id, event.worker, problem)
            if ts.worker == event.worker:
                return self._requeue([event.task_id], f"worker {event.worker} sent a malformed result")
            return []
        if self.raise_on_error and event.result.error is not None:
            exc = event.result.exception
            if exc is None:
                exc = FitFailedError(
                    f"a fit failed and error_score='raise':\n{event.result.error}"
                )
            return self._abort(exc)
        return self._record(ts, event.result)

    def _malformed(self, result: FoldResult) -> str | None:
        if self.score_names and set(result.test_scores) != set(self.score_names):
            return f"test scores for {sorted(result.test_scores)}, expected {sorted(self.score_names)}"
        if self.return_train_score and (
            result.train_scores is None
            or (self.score_names and set(result.train_scores) != set(self.score_names))
        ):
            return "train scores missing"
        return None

    def _record(self, ts: _TaskState, result: FoldResult, release: bool = True) -> list[Command]:
        ts.done = True
        if ts.worker is not None and release:
            self._release(ts.worker, ts.task.task_id)
        try:
            self.queue.remove(ts.task.task_id)  # a requeued copy still waiting
        except ValueError:
            pass
        self.n_tasks_done += 1
        cid = ts.task.candidate_id
        slots = self.fold_results[cid]
        slots[ts.fold] = result
        if any(r is None for r in slots):
            if self.pruner is not None and cid not in self.pruned:
                return self._maybe_prune(cid)
            return []
        results: list[FoldResult] = slots  # type: ignore[assignment]
        self.completed.append(cid)
        self.starved = False  # the strategy hears a new score: it may have more to give
        self.told_since_ask = True
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
                commands += self._record(ts, self._skipped(), release=False)
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

    def _requeue(self, task_ids: list[int], reason: str) -> list[Command]:
        commands: list[Command] = []
        for task_id in sorted(task_ids, reverse=True):  # keep their order at the front
            ts = self.tasks[task_id]
            if ts.done:
                continue
            ts.deaths += 1
            ts.worker = None
            if ts.deaths >= self.max_deaths:
                error = TaskFailedError(
                    f"task {task_id} (candidate {ts.task.candidate_id}, fold {ts.fold}, "
                    f"params {ts.task.params!r}) was lost {ts.deaths} times: {reason}. "
                    "It may crash the workers that run it (out of memory, a segfault in native code)"
                )
                if self.raise_on_error:
                    return self._abort(error)
                logger.error("%s", error)
                commands += self._record(ts, self._failure(ts.task, f"TaskFailedError: {error}"))
                continue
            self.queue.appendleft(task_id)
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
        logger.warning(
            "worker %s lost (%s); requeueing %d task(s)", event.worker, event.reason, len(state.running)
        )
        return self._requeue(list(state.running), f"worker {event.worker} lost ({event.reason})")

    def _on_task_failed(self, event: TaskFailed) -> list[Command]:
        self._release(event.worker, event.task_id)
        ts = self.tasks.get(event.task_id)
        if ts is None or ts.done or ts.worker != event.worker or event.attempt != ts.deaths:
            return []  # stale: that attempt was already requeued (its worker was lost)
        logger.warning("worker %s could not run task %d: %s", event.worker, event.task_id, event.error)
        return self._requeue([event.task_id], f"worker {event.worker} could not run it: {event.error}")

    def _abort(self, error: BaseException) -> list[Command]:
        self.aborted = error
        self.queue.clear()
        return [Abort(error)]

    def _pick(self) -> tuple[_WorkerState, int] | None:
        """The worker to dispatch to next and the queue index of its task, or None
        when no worker has room."""
        most = self._free.most()
        if most is None:
            return None
        if self.affinity is None:
            return self.workers[most], 0
        free = [w for w in self.workers.values() if w.free > 0]
        free.sort(key=lambda w: w.free, reverse=True)  # stable: ties keep join order
        for index, task_id in enumerate(self.queue):
            group = self.groups[task_id]
            for worker in free:
                if group in worker.held:
                    return worker, index
        for index, task_id in enumerate(self.queue):
            group = self.groups[task_id]
            if not any(group in w.held for w in self.workers.values()):
                return free[0], index
        return free[0], 0

    def _hold(self, worker: _WorkerState, group: Hashable) -> None:
        worker.held[group] = None
        worker.held.move_to_end(group)
        while len(worker.held) > self.affinity_memory:
            worker.held.popitem(last=False)

    def _refill(self) -> list[Command]:
        commands: list[Command] = []
        # Dispatch: one task at a time to the worker with the most free capacity.
        while self.queue:
            pick = self._pick()
            if pick is None:
                break
            target, index = pick
            name = target.worker.name
            task_id = self.queue[index]
            del self.queue[index]
            ts = self.tasks[task_id]
            if self.affinity is not None:
                self._hold(target, self.groups[task_id])
            ts.worker = name
            target.running.add(ts.task.task_id)
            self._in_flight += 1
            self._free.update(name, target.free)
            task = ts.task
            if ts.deaths:
                task = Task(task.task_id, task.candidate_id, task.fold, task.params, attempt=ts.deaths)
            commands.append(Dispatch(target.worker, task))
        # Ask ahead, so that the queue covers every free slot plus some lookahead.
        if not (self.asking or self.strategy_finished or self.starved):
            wanted = max(self._capacity, 1) + self.lookahead - self.in_flight - len(self.queue)
            if wanted > 0:
                self.asking = True
                self.told_since_ask = False
                commands.append(Ask(math.ceil(wanted / self.n_folds)))
        return commands

