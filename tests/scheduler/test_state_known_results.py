"""The state machine with results known from an earlier run (a resumed search)."""

from __future__ import annotations

import math

from hpsearch.errors import FitFailedError
from hpsearch.evaluation import FoldResult
from hpsearch.scheduler.state import Abort, CandidateDone, Dispatch, Proposed, SchedulerState, Tell
from hpsearch.strategies.base import Candidate
from hpsearch.workers.base import TaskFinished, WorkerJoined

from .test_state import FakeWorker, of, ok


def test_known_results_are_recorded_not_dispatched():
    known = {(0, 0): ok(0.5), (0, 1): ok(0.7), (1, 1): ok(0.9)}
    state = SchedulerState(n_folds=2, lookahead=0, known_results=known)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=4)))
    commands = state.handle(Proposed([Candidate(0, {"x": 0}), Candidate(1, {"x": 1})], True))
    # candidate 0 is complete at once: told and reported, none of its tasks dispatched
    assert of(commands, Tell) == [Tell(0, 0.6)]
    assert [c.candidate.id for c in of(commands, CandidateDone)] == [0]
    assert [(d.task.candidate_id, d.task.fold) for d in of(commands, Dispatch)] == [(1, 0)]
    assert state.n_tasks_done == 3
    commands = state.handle(TaskFinished("w", 2, 0, ok(0.1)))
    assert of(commands, Tell) == [Tell(1, 0.5)]
    assert state.done
    assert [r.test_scores["score"] for _, rs in state.results() for r in rs] == [0.5, 0.7, 0.1, 0.9]


def test_a_malformed_known_result_runs_again():
    bad = FoldResult({"other": 1.0}, fit_time=0.0, score_time=0.0, n_test_samples=1)
    state = SchedulerState(n_folds=1, lookahead=0, known_results={(0, 0): bad})
    state.start()
    state.handle(WorkerJoined(FakeWorker("w")))
    commands = state.handle(Proposed([Candidate(0, {"x": 0})], True))
    assert [d.task.task_id for d in of(commands, Dispatch)] == [0]


def test_a_known_failure_with_error_score_raise_aborts():
    failed = FoldResult({"score": math.nan}, fit_time=0.0, score_time=0.0, n_test_samples=1, error="boom")
    state = SchedulerState(n_folds=1, error_score="raise", known_results={(0, 0): failed})
    state.start()
    commands = state.handle(Proposed([Candidate(0, {"x": 0})], True))
    (abort,) = of(commands, Abort)
    assert isinstance(abort.error, FitFailedError) and "boom" in str(abort.error)
    assert state.done
