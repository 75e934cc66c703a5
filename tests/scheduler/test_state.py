"""The scheduler state machine alone: events in, commands out, fake workers, no threads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from hpsearch.errors import FitFailedError, TaskFailedError
from hpsearch.evaluation import FoldResult
from hpsearch.scheduler.state import (
    Abort,
    Ask,
    CandidateDone,
    Dispatch,
    Proposed,
    SchedulerState,
    Tell,
    Tick,
)
from hpsearch.strategies.base import Candidate
from hpsearch.workers.base import PoolFailed, TaskFailed, TaskFinished, WorkerJoined, WorkerLost


@dataclass
class FakeWorker:
    """A worker as the state machine sees it; it never calls submit (the loop does)."""

    name: str
    slots: int = 1
    prefetch: int = 0

    def submit(self, task):
        raise AssertionError("the state machine must not call workers")

    def close(self):
        pass


def ok(score: float = 1.0) -> FoldResult:
    return FoldResult({"score": score}, fit_time=0.1, score_time=0.01, n_test_samples=10)


def failed() -> FoldResult:
    return FoldResult({"score": math.nan}, fit_time=0.1, score_time=0.0, n_test_samples=10, error="Traceback: boom")


def of(commands, kind):
    return [c for c in commands if isinstance(c, kind)]


def propose(state, ids, finished=False):
    return state.handle(Proposed([Candidate(i, {"x": i}) for i in ids], finished))


def test_asks_first_then_dispatches_up_to_capacity():
    state = SchedulerState(n_folds=2, lookahead=0)
    assert of(state.start(), Ask) == [Ask(1)]  # no worker yet: ask for something to start with
    state.handle(WorkerJoined(FakeWorker("w", slots=3)))
    commands = propose(state, [0, 1])
    dispatched = [(d.task.candidate_id, d.task.fold) for d in of(commands, Dispatch)]
    assert dispatched == [(0, 0), (0, 1), (1, 0)]  # 3 slots, candidate order, fold order
    assert state.in_flight == 3 and len(state.queue) == 1


def test_asks_ahead_for_free_capacity_plus_lookahead():
    state = SchedulerState(n_folds=2, lookahead=2)
    state.start()
    state.handle(WorkerJoined(FakeWorker("a", slots=2, prefetch=1)))
    state.handle(WorkerJoined(FakeWorker("b", slots=1)))
    commands = propose(state, [])  # empty answer while not finished: starved
    assert of(commands, Ask) == []
    assert state.starved
    state.starved = False
    commands = state.handle(Tick(0.0))
    # capacity 4 + lookahead 2 = 6 tasks wanted = 3 candidates of 2 folds
    assert of(commands, Ask) == [Ask(3)]


def test_balances_tasks_across_workers():
    state = SchedulerState(n_folds=1, lookahead=0)
    state.start()
    a, b = FakeWorker("a", slots=2), FakeWorker("b", slots=2)
    state.handle(WorkerJoined(a))
    state.handle(WorkerJoined(b))
    commands = propose(state, [0, 1, 2, 3])
    workers = [d.worker.name for d in of(commands, Dispatch)]
    assert sorted(workers) == ["a", "a", "b", "b"]


def test_candidate_completion_tells_the_mean_score_in_any_order():
    state = SchedulerState(n_folds=3, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=3)))
    propose(state, [0], finished=True)
    assert state.handle(TaskFinished("w", 2, 0, ok(0.3))) == []
    state.handle(TaskFinished("w", 0, 0, ok(0.9)))
    commands = state.handle(TaskFinished("w", 1, 0, ok(0.6)))
    assert of(commands, Tell) == [Tell(0, pytest.approx(0.6))]
    (done,) = of(commands, CandidateDone)
    assert [r.test_scores["score"] for r in done.results] == [0.9, 0.6, 0.3]  # fold order
    assert state.done
    assert [c.id for c, _ in state.results()] == [0]


def test_failed_fold_gives_nan_mean_and_is_told():
    state = SchedulerState(n_folds=2, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=2)))
    propose(state, [0], finished=True)
    state.handle(TaskFinished("w", 0, 0, failed()))
    (tell,) = of(state.handle(TaskFinished("w", 1, 0, ok())), Tell)
    assert math.isnan(tell.score)


def test_lost_worker_tasks_go_back_to_the_front_with_next_attempt():
    state = SchedulerState(n_folds=1, lookahead=0)
    state.start()
    a, b = FakeWorker("a", slots=2), FakeWorker("b", slots=1)
    state.handle(WorkerJoined(a))
    commands = propose(state, [0, 1, 2, 3], finished=True)  # a runs 0 and 1; 2 and 3 wait
    assert [(d.worker.name, d.task.task_id) for d in of(commands, Dispatch)] == [("a", 0), ("a", 1)]
    commands = state.handle(WorkerLost("a", "heartbeat timeout"))
    assert of(commands, Dispatch) == []
    assert list(state.queue) == [0, 1, 2, 3]  # lost tasks first, in their order
    commands = state.handle(WorkerJoined(b))
    (dispatch,) = of(commands, Dispatch)
    assert dispatch.task.task_id == 0 and dispatch.task.attempt == 1


def test_first_result_wins_and_duplicates_are_ignored():
    state = SchedulerState(n_folds=1, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("a")))
    propose(state, [0, 1], finished=True)
    state.handle(WorkerLost("a", "gone"))
    state.handle(WorkerJoined(FakeWorker("b")))  # gets task 0, attempt 1
    # The lost worker's late result for attempt 0 arrives first: it is recorded.
    commands = state.handle(TaskFinished("a", 0, 0, ok(0.5)))
    assert of(commands, Tell) == [Tell(0, 0.5)]
    # The re-dispatched attempt finishes later: ignored, nothing told twice.
    commands = state.handle(TaskFinished("b", 0, 1, ok(0.7)))
    assert of(commands, Tell) == [] and state.n_tasks_done == 1
    assert state.results()[0][1][0].test_scores["score"] == 0.5


def test_a_late_result_of_a_requeued_task_takes_it_out_of_the_queue():
    state = SchedulerState(n_folds=2, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("a", slots=2)))
    propose(state, [0], finished=True)  # a runs both folds
    state.handle(WorkerLost("a", "gone"))
    assert list(state.queue) == [0, 1] and state.tasks[0].queued
    # The lost worker's result for fold 0 still arrives: recorded, and no longer queued.
    assert of(state.handle(TaskFinished("a", 0, 0, ok(0.5))), Tell) == []  # fold 1 still missing
    assert list(state.queue) == [1] and not state.tasks[0].queued
    commands = state.handle(WorkerJoined(FakeWorker("b")))
    assert [d.task.task_id for d in of(commands, Dispatch)] == [1]  # only the fold left
    commands = state.handle(TaskFinished("b", 1, 1, ok(0.7)))
    assert of(commands, Tell) == [Tell(0, 0.6)] and state.done
    assert not state.queue and state.n_tasks_done == 2


def test_task_lost_three_times_fails_as_data():
    state = SchedulerState(n_folds=1, score_names=["score"], lookahead=0, max_deaths=3, error_score=-1.0)
    state.start()
    propose(state, [0], finished=True)
    for i in range(3):
        state.handle(WorkerJoined(FakeWorker(f"w{i}")))
        commands = state.handle(WorkerLost(f"w{i}", "killed"))
    (tell,) = of(commands, Tell)
    assert tell.score == -1.0
    (result,) = state.results()[0][1]
    assert "TaskFailedError" in result.error and "lost 3 times" in result.error
    assert state.done


def test_task_lost_three_times_aborts_with_error_score_raise():
    state = SchedulerState(n_folds=1, lookahead=0, error_score="raise")
    state.start()
    propose(state, [0], finished=True)
    for i in range(3):
        state.handle(WorkerJoined(FakeWorker(f"w{i}")))
        commands = state.handle(WorkerLost(f"w{i}", "killed"))
    (abort,) = of(commands, Abort)
    assert isinstance(abort.error, TaskFailedError) and state.done


def test_task_failed_on_a_worker_is_retried_elsewhere():
    state = SchedulerState(n_folds=1, lookahead=0)
    state.start()
    a = FakeWorker("a")
    state.handle(WorkerJoined(a))
    propose(state, [0], finished=True)
    commands = state.handle(TaskFailed("a", 0, 0, "ModuleNotFoundError: mymodel"))
    (dispatch,) = of(commands, Dispatch)
    assert dispatch.task.attempt == 1


def test_error_score_raise_aborts_on_the_first_failed_fit():
    state = SchedulerState(n_folds=2, lookahead=0, error_score="raise")
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=2)))
    propose(state, [0], finished=True)
    (abort,) = of(state.handle(TaskFinished("w", 0, 0, failed())), Abort)
    assert isinstance(abort.error, FitFailedError) and "boom" in str(abort.error)
    assert state.done and state.handle(TaskFinished("w", 1, 0, ok())) == []


def test_pool_failure_aborts():
    state = SchedulerState(n_folds=1)
    state.start()
    error = RuntimeError("no worker came back")
    assert of(state.handle(PoolFailed(error)), Abort) == [Abort(error)]


def test_starved_strategy_is_asked_again_after_a_score():
    state = SchedulerState(n_folds=1, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=2)))
    propose(state, [0])  # one candidate, strategy not finished
    commands = propose(state, [])  # nothing more until it hears a score
    assert of(commands, Ask) == [] and not state.stalled
    commands = state.handle(TaskFinished("w", 0, 0, ok()))
    assert of(commands, Tell) == [Tell(0, 1.0)]
    assert of(commands, Ask) == [Ask(2)]  # asked again (2 free slots), after the tell
    assert commands.index(of(commands, Tell)[0]) < commands.index(of(commands, Ask)[0])


def test_a_strategy_that_proposes_nothing_forever_is_detected():
    state = SchedulerState(n_folds=1)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w")))
    propose(state, [])
    assert state.stalled and not state.done


def test_duplicate_candidate_ids_are_a_strategy_bug():
    state = SchedulerState(n_folds=1)
    state.start()
    propose(state, [0])
    with pytest.raises(ValueError, match="candidate id 0 twice"):
        propose(state, [0])


def test_an_empty_answer_overtaken_by_a_score_is_not_starvation():
    # The strategy thread answers an Ask, then hears a Tell the scheduler issued after
    # that Ask: the empty answer predates the score, so the scheduler must ask again.
    state = SchedulerState(n_folds=1, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=2)))
    propose(state, [0])  # candidate 0 dispatched; an Ask for the free slot goes out
    assert state.asking
    commands = state.handle(TaskFinished("w", 0, 0, ok()))  # Tell issued while asking
    assert of(commands, Tell) == [Tell(0, 1.0)] and of(commands, Ask) == []
    commands = propose(state, [])  # the Ask's answer, computed before the Tell arrived
    assert not state.starved and not state.stalled
    assert of(commands, Ask) == [Ask(2)]


def test_a_malformed_result_is_requeued_not_a_crash():
    state = SchedulerState(n_folds=1, score_names=["accuracy"], score_key="accuracy", lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w")))
    propose(state, [0], finished=True)
    bad = FoldResult({}, fit_time=0.1, score_time=0.0, n_test_samples=1)  # no score at all
    (dispatch,) = of(state.handle(TaskFinished("w", 0, 0, bad)), Dispatch)
    assert dispatch.task.attempt == 1 and state.n_tasks_done == 0


def test_a_stale_task_failure_does_not_requeue_a_running_task():
    state = SchedulerState(n_folds=1, lookahead=0)
    state.start()
    state.handle(WorkerJoined(FakeWorker("a")))
    propose(state, [0], finished=True)
    state.handle(WorkerLost("a", "silent"))
    state.handle(WorkerJoined(FakeWorker("b")))  # runs attempt 1
    assert state.handle(TaskFailed("a", 0, 0, "late news from the lost worker")) == []
    assert state.tasks[0].deaths == 1 and state.tasks[0].worker == "b" and not state.queue


def propose_idle(state, ids, finished=False):
    return state.handle(Proposed([Candidate(i, {"x": i}) for i in ids], finished, idle=True))


def test_idle_slots_are_offered_to_the_strategy_while_regular_work_runs():
    state = SchedulerState(n_folds=2, lookahead=0, idle_asks=True)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=4)))
    commands = propose(state, [0])  # 2 tasks on 4 slots
    assert len(of(commands, Dispatch)) == 2 and of(commands, Ask) == [Ask(1)]
    # the strategy has nothing until it hears a score: the 2 idle slots are offered
    assert of(propose(state, []), Ask) == [Ask(1, idle=True)]
    commands = propose_idle(state, [1, 2])  # 4 tasks for 2 idle slots
    assert [d.task.candidate_id for d in of(commands, Dispatch)] == [1, 1]
    assert list(state.queue) == [4, 5]  # the rest waits for a slot running nothing
    commands = state.handle(TaskFinished("w", 0, 0, ok()))
    assert [d.task.task_id for d in of(commands, Dispatch)] == [4]  # into the slot freed
    # a regular candidate proposed now goes ahead of those still waiting
    commands = propose(state, [3])
    assert of(commands, Dispatch) == [] and list(state.queue) == [6, 7, 5]
    commands = state.handle(TaskFinished("w", 2, 0, ok()))
    assert [d.task.task_id for d in of(commands, Dispatch)] == [6]


def test_idle_asks_stop_with_the_regular_work_and_after_an_empty_answer():
    state = SchedulerState(n_folds=2, lookahead=0, idle_asks=True)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=4)))
    propose(state, [0])
    propose(state, [])
    commands = propose_idle(state, [])  # nothing to give: not asked again before a score
    assert of(commands, Ask) == [] and state.idle_starved
    assert of(state.handle(Tick(1.0)), Ask) == []
    state.handle(TaskFinished("w", 0, 0, ok()))
    commands = state.handle(TaskFinished("w", 1, 0, ok()))  # candidate 0 done: a Tell
    assert of(commands, Tell) and of(commands, Ask) == [Ask(2)]  # a regular ask first
    propose(state, [1])
    commands = propose(state, [])
    assert of(commands, Ask) == [Ask(1, idle=True)]
    propose_idle(state, [2])  # fills the 2 idle slots
    commands = state.handle(TaskFinished("w", 2, 0, ok()))
    assert of(commands, Ask) == [Ask(1, idle=True)]  # a slot runs nothing again
    propose_idle(state, [])
    commands = state.handle(TaskFinished("w", 3, 0, ok()))  # the last regular candidate ends
    assert of(commands, Tell) and of(commands, Ask) == [Ask(1)]
    commands = propose(state, [])
    # only the idle promotion runs: its slots are not filled again, the search can end
    assert of(commands, Ask) == [] and state.in_flight == 2


def test_queued_idle_tasks_do_not_hold_back_the_regular_ask():
    # An idle answer brings n_folds tasks for fewer idle slots: the rest waits queued,
    # and must not count as the lookahead that makes a regular Ask unnecessary.
    state = SchedulerState(n_folds=5, idle_asks=True)  # lookahead 2
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=2, prefetch=1)))
    propose(state, [0])
    propose(state, [])  # nothing more until a score
    for task_id in range(4):
        state.handle(TaskFinished("w", task_id, 0, ok()))
    propose_idle(state, [1])  # one slot runs nothing: 1 idle task runs, 4 wait
    assert list(state.queue) == [6, 7, 8, 9]
    commands = state.handle(TaskFinished("w", 4, 0, ok()))  # candidate 0 completes
    assert of(commands, Tell) and of(commands, Ask) == [Ask(1)]  # the promotion now due is asked for


def test_affinity_never_sends_an_idle_task_ahead_of_a_regular_one():
    # Idle promotions continue models a worker holds; a new regular candidate's group is
    # held by nobody. Affinity must still give the regular task the free room first.
    for affinity in (lambda params: params["k"], None):
        state = SchedulerState(n_folds=1, idle_asks=True, affinity=affinity)
        state.start()
        state.handle(WorkerJoined(FakeWorker("w", slots=2, prefetch=1)))
        state.handle(Proposed([Candidate(0, {"k": "a"})], False))
        state.handle(Proposed([], False))
        state.handle(Proposed([Candidate(i, {"k": "a"}) for i in (1, 2, 4)], False, idle=True))
        state.handle(TaskFinished("w", 0, 0, ok()))  # idle task 2 takes the slot freed
        commands = state.handle(Proposed([Candidate(3, {"k": "z"})], False))
        assert [d.task.task_id for d in of(commands, Dispatch)] == [3], affinity  # into the prefetch room
        assert list(state.queue) == [4]


def test_idle_tasks_never_wait_in_a_workers_prefetch_queue():
    state = SchedulerState(n_folds=3, lookahead=0, idle_asks=True)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w", slots=2, prefetch=2)))
    propose(state, [0])  # 3 tasks: 2 running, 1 prefetched
    assert of(propose(state, []), Ask) == []  # no slot runs nothing
    assert of(state.handle(TaskFinished("w", 0, 0, ok())), Ask) == []  # the prefetched task starts
    commands = state.handle(TaskFinished("w", 1, 0, ok()))
    assert of(commands, Ask) == [Ask(1, idle=True)]
    commands = propose_idle(state, [1])
    assert [d.task.task_id for d in of(commands, Dispatch)] == [3] and list(state.queue) == [4, 5]
