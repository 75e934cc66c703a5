"""Folds dropped early, and tasks on subsampled splits: the state machine alone."""

from __future__ import annotations

import math

import pytest

from hpsearch.errors import InvalidParameterError
from hpsearch.evaluation import FoldResult
from hpsearch.scheduler.pruning import PairedPruner
from hpsearch.scheduler.state import CandidateDone, Dispatch, Proposed, SchedulerState, Tell
from hpsearch.strategies.base import Candidate
from hpsearch.workers.base import TaskFinished, WorkerJoined

from .test_state import FakeWorker, of


def result(score: float) -> FoldResult:
    return FoldResult({"score": score}, fit_time=0.1, score_time=0.01, n_test_samples=10)


def finish(state, worker, task_id, score):
    return state.handle(TaskFinished(worker, task_id, 0, result(score)))


# -- the rule ---------------------------------------------------------------------------


def test_rule_prunes_a_candidate_consistently_worse_on_the_same_folds():
    pruner = PairedPruner()
    best = [0.80, 0.95, 0.70, 0.90, 0.85]
    # fold scores vary a lot, but the candidate is 0.05 worse on each: paired, that is clear
    assert pruner.should_prune([0.75, 0.90, None, None, None], best)
    # its mean over these folds (0.825) is above the best's overall mean (0.84)? no matter:
    # unpaired it would look close, paired it is not
    assert not pruner.should_prune([0.85, 0.90, None, None, None], best)  # +0.05, -0.05: undecided
    assert not pruner.should_prune([0.75, None, None, None, None], best)  # one fold: never
    assert not pruner.should_prune([0.1, 0.1, 0.1, 0.1, 0.1], best)  # complete: nothing to skip


def test_rule_prunes_a_failed_fold_at_once_and_respects_its_settings():
    assert PairedPruner().should_prune([math.nan, None, None], [0.5, 0.5, 0.5])
    noisy = [0.60, 0.88, None, None, None]  # mean -0.085, but noisy
    best = [0.80, 0.95, 0.70, 0.90, 0.85]
    assert not PairedPruner(confidence=0.95).should_prune(noisy, best)
    assert PairedPruner(confidence=0.6).should_prune(noisy, best)
    assert not PairedPruner(min_folds=3).should_prune([0.7, 0.8, None, None, None], best)
    with pytest.raises(InvalidParameterError, match="min_folds"):
        PairedPruner(min_folds=1)
    with pytest.raises(InvalidParameterError, match="confidence"):
        PairedPruner(confidence=1.0)


# -- the state machine ----------------------------------------------------------------------


def started(n_folds=4, slots=2, **kwargs):
    state = SchedulerState(n_folds=n_folds, lookahead=0, pruner=PairedPruner(), **kwargs)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=slots)))
    return state


def test_pruned_candidate_skips_queued_folds_and_ignores_running_ones():
    state = started()
    commands = state.handle(Proposed([Candidate(0, {"x": 0}), Candidate(1, {"x": 1})], True))
    assert [d.task.task_id for d in of(commands, Dispatch)] == [0, 1]
    # candidate 0 completes with scores 0.9 (fold by fold, new tasks go out as slots free)
    commands = []
    for task_id in range(4):
        commands += finish(state, "w", task_id, 0.9 + task_id / 100)
    assert of(commands, Tell) == [Tell(0, pytest.approx(0.915))]
    assert [d.task.task_id for d in of(commands, Dispatch)] == [2, 3, 4, 5]
    # candidate 1: two folds much worse, paired with candidate 0's -> pruned at once
    commands = finish(state, "w", 4, 0.5)
    assert [d.task.task_id for d in of(commands, Dispatch)] == [6]  # its fold 2 starts
    commands = finish(state, "w", 5, 0.52)
    assert of(commands, Dispatch) == []  # its fold 3 was queued: it never runs
    assert of(commands, Tell) == [Tell(1, pytest.approx(0.51))]
    (done,) = of(commands, CandidateDone)
    assert done.candidate.tags["pruned"] is True
    assert [r.test_scores["score"] for r in done.results][:2] == [0.5, 0.52]
    assert all(math.isnan(r.test_scores["score"]) and r.error is None for r in done.results[2:])
    assert state.pruned == {1} and state.done and not state.queue
    # fold 2 still runs on the worker: its slot stays taken until it reports, then is ignored
    assert state.in_flight == 1
    assert finish(state, "w", 6, 0.99) == []
    assert state.in_flight == 0
    (_, folds), = [r for r in state.results() if r[0].id == 1]
    assert math.isnan(folds[2].test_scores["score"])  # the late result did not overwrite


def test_a_new_best_prunes_candidates_already_running():
    state = started(n_folds=3, slots=6)
    state.handle(Proposed([Candidate(0, {"x": 0}), Candidate(1, {"x": 1})], True))
    finish(state, "w", 3, 0.6)  # candidate 1, folds 0 and 1
    finish(state, "w", 4, 0.62)
    assert state.pruned == set()  # no complete candidate to compare with yet
    finish(state, "w", 0, 0.9)
    finish(state, "w", 1, 0.91)
    commands = finish(state, "w", 2, 0.92)  # candidate 0 completes: the new best
    assert state.pruned == {1}
    assert [t.candidate_id for t in of(commands, Tell)] == [0, 1]


def test_candidates_are_compared_only_at_the_same_resource():
    state = started(n_folds=2, slots=8, split_offsets={10: 2, 40: 4})
    cands = [Candidate(0, {"x": 0}, resource=40, n_samples=40),
             Candidate(1, {"x": 1}, resource=10, n_samples=10),
             Candidate(2, {"x": 2}, resource=40, n_samples=40)]
    commands = state.handle(Proposed(cands, True))
    # each candidate's tasks run on the splits of its training-set size
    assert [(d.task.candidate_id, d.task.fold) for d in of(commands, Dispatch)] == [
        (0, 4), (0, 5), (1, 2), (1, 3), (2, 4), (2, 5)]
    finish(state, "w", 0, 0.9)
    finish(state, "w", 1, 0.9)
    finish(state, "w", 2, 0.1)  # candidate 1 at 10 samples: far below, but not comparable
    assert state.pruned == set()
    finish(state, "w", 4, 0.1)  # candidate 2 at 40 samples: one fold (min_folds is 2)
    assert state.pruned == set()


def test_unknown_sample_count_is_refused():
    state = started(split_offsets={10: 4})
    with pytest.raises(ValueError, match="n_samples=20"):
        state.handle(Proposed([Candidate(0, {}, n_samples=20)], True))


def test_without_a_pruner_nothing_is_pruned():
    state = SchedulerState(n_folds=2, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=4)))
    state.handle(Proposed([Candidate(0, {}), Candidate(1, {})], True))
    for task_id, score in enumerate([0.9, 0.9, 0.1, 0.1]):
        finish(state, "w", task_id, score)
    assert state.done and state.pruned == set()
    assert [c.tags for c, _ in state.results()] == [{}, {}]
