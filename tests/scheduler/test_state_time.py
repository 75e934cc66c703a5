"""Deaths, time limits and stragglers in the state machine: virtual time, fake workers."""

from __future__ import annotations

import math

import pytest

from hpsearch.errors import FitFailedError
from hpsearch.scheduler.state import Abandon, Abort, Dispatch, SchedulerState, Tell, Tick
from hpsearch.workers.base import SlotFreed, TaskFinished, WorkerJoined, WorkerLost

from .test_state import FakeWorker, of, ok, propose


def started_state(n_candidates, workers, **kwargs):
    state = SchedulerState(n_folds=1, lookahead=0, **kwargs)
    state.start(now=0.0)
    for worker in workers:
        state.handle(WorkerJoined(worker), now=0.0)
    commands = propose(state, list(range(n_candidates)), finished=True)
    return state, [(d.worker.name, d.task.task_id) for d in of(commands, Dispatch)]


def test_only_the_running_task_of_a_lost_worker_counts_a_death():
    # One slot and one prefetched task: task 0 runs, task 1 waits behind it.
    state, dispatched = started_state(2, [FakeWorker("a", slots=1, prefetch=1)])
    assert dispatched == [("a", 0), ("a", 1)]
    state.handle(WorkerLost("a", "killed"), now=1.0)
    assert state.tasks[0].deaths == 1 and state.tasks[1].deaths == 0
    assert list(state.queue) == [0, 1]


def test_a_prefetched_task_starts_when_the_one_ahead_finishes():
    state, _ = started_state(3, [FakeWorker("a", slots=1, prefetch=1)])
    state.handle(TaskFinished("a", 0, 0, ok()), now=2.0)  # task 1 starts; task 2 is prefetched
    state.handle(WorkerLost("a", "killed"), now=3.0)
    assert [state.tasks[i].deaths for i in (1, 2)] == [1, 0]


def test_churn_never_fails_a_healthy_task_that_never_ran():
    # Workers die one after another while a long task holds each one's only slot:
    # the tasks queued behind it are requeued each time, and never fail.
    state, _ = started_state(3, [FakeWorker("w0", slots=1, prefetch=2)], max_deaths=3)
    for i in range(1, 4):
        state.handle(WorkerLost(f"w{i - 1}", "killed"), now=float(i))
        state.handle(WorkerJoined(FakeWorker(f"w{i}", slots=1, prefetch=2)), now=float(i))
    assert state.tasks[0].done and "lost 3 times" in state.fold_results[0][0].error
    assert state.tasks[1].deaths == state.tasks[2].deaths == 0
    assert not state.tasks[1].done and not state.tasks[2].done


def test_the_death_limit_is_a_parameter():
    state, _ = started_state(1, [FakeWorker("w0")], max_deaths=1)
    state.handle(WorkerLost("w0", "killed"), now=1.0)
    assert state.tasks[0].done and "lost 1 times" in state.fold_results[0][0].error


def test_a_fit_past_its_time_limit_fails_as_data_and_is_abandoned():
    worker = FakeWorker("a", slots=1, prefetch=1)
    state, _ = started_state(2, [worker], fit_timeout=2.0)
    assert of(state.handle(Tick(1.9)), Abandon) == []
    commands = state.handle(Tick(2.5))
    (abandon,) = of(commands, Abandon)
    assert abandon.worker is worker and abandon.task.task_id == 0
    (tell,) = of(commands, Tell)
    assert tell.candidate_id == 0 and math.isnan(tell.score)
    assert "ran past fit_timeout=2 s" in state.fold_results[0][0].error
    # Its slot stays busy until the worker frees it; then task 1 starts there.
    assert state.workers["a"].running[1].started is None
    state.handle(SlotFreed("a", 0), now=3.0)
    assert state.workers["a"].running[1].started == 3.0
    assert of(state.handle(Tick(4.9)), Abandon) == []  # task 1 has run 1.9 s, not 4.9
    # The worker killed for it (a process) is lost: that blames none of its tasks.
    state.handle(WorkerLost("a", "killed by the pool"), now=5.5)
    assert state.tasks[1].deaths == 0 and list(state.queue) == [1]


def test_a_time_limit_with_error_score_raise_aborts():
    state, _ = started_state(1, [FakeWorker("a")], fit_timeout=1.0, error_score="raise")
    (abort,) = of(state.handle(Tick(1.5)), Abort)
    assert isinstance(abort.error, FitFailedError) and "fit_timeout=1 s" in str(abort.error)


def test_a_straggler_runs_again_on_an_idle_worker_and_the_first_result_wins():
    a, b = FakeWorker("a"), FakeWorker("b")
    state, dispatched = started_state(8, [a, b])
    assert dispatched == [("a", 0), ("b", 1)]
    now = 0.0
    # b finishes six tasks of 1 s while a is stuck on task 0.
    for task_id in range(1, 7):
        now += 1.0
        commands = state.handle(TaskFinished("b", task_id, 0, ok()), now=now)
    assert [(d.worker.name, d.task.task_id) for d in of(commands, Dispatch)] == [("b", 7)]
    assert of(state.handle(Tick(now + 0.5)), Dispatch) == []  # b is busy: no duplicate
    now += 1.0
    state.handle(TaskFinished("b", 7, 0, ok()), now=now)  # b is idle, nothing queued
    (dup,) = of(state.handle(Tick(now + 0.1)), Dispatch)
    assert dup.worker is b and dup.task.task_id == 0 and dup.task.attempt == 1
    assert of(state.handle(Tick(now + 5.0)), Dispatch) == []  # never a third copy
    (tell,) = of(state.handle(TaskFinished("b", 0, 1, ok(0.25)), now=now + 6), Tell)
    assert tell == Tell(0, 0.25) and state.done
    # a's copy still holds its slot: a leftover to abandon at the end of the search.
    assert [(w.name, t.task_id) for w, t in state.leftovers()] == [("a", 0)]
    assert state.handle(TaskFinished("a", 0, 0, ok(0.75)), now=now + 7) == []
    assert state.results()[0][1][0].test_scores["score"] == 0.25 and state.leftovers() == []


def test_no_straggler_before_enough_tasks_finished():
    state, _ = started_state(2, [FakeWorker("a"), FakeWorker("b")])
    state.handle(TaskFinished("b", 1, 0, ok()), now=1.0)
    assert of(state.handle(Tick(100.0)), Dispatch) == []


def test_a_task_waiting_behind_a_straggler_is_taken_by_an_idle_worker():
    a, b = FakeWorker("a", slots=1, prefetch=1), FakeWorker("b", slots=1, prefetch=1)
    state, dispatched = started_state(9, [a, b])
    assert dispatched == [("a", 0), ("b", 1), ("a", 2), ("b", 3)]
    now = 0.0
    for task_id in (1, 3, 4, 5, 6, 7, 8):  # b does all the rest, one second each
        now += 1.0
        state.handle(TaskFinished("b", task_id, 0, ok()), now=now)
    duplicated = {d.task.task_id for d in of(state.handle(Tick(now + 0.1)), Dispatch)}
    assert duplicated == {2}  # b has one free slot: for the task that never started on a
    assert state.tasks[0].live_copies() == 1
    state.handle(TaskFinished("b", 2, 1, ok()), now=now + 1)
    (dup,) = of(state.handle(Tick(now + 1.1)), Dispatch)
    assert dup.task.task_id == 0  # then the one running on a for 8 s


def test_no_straggler_when_turned_off():
    state, _ = started_state(8, [FakeWorker("a"), FakeWorker("b")], straggler_factor=0)
    for task_id in range(1, 8):
        state.handle(TaskFinished("b", task_id, 0, ok()), now=float(task_id))
    assert of(state.handle(Tick(100.0)), Dispatch) == []


@pytest.mark.parametrize("lost", ["a", "b"])
def test_losing_one_copy_of_a_duplicated_task_leaves_the_other_running(lost):
    a, b = FakeWorker("a"), FakeWorker("b")
    state, _ = started_state(7, [a, b])
    for task_id in range(1, 7):
        state.handle(TaskFinished("b", task_id, 0, ok()), now=float(task_id))
    assert of(state.handle(Tick(6.5)), Dispatch)  # task 0 now runs on a and on b
    state.handle(WorkerLost(lost, "killed"), now=7.0)
    assert not state.queue and state.tasks[0].live_copies() == 1
    other = "b" if lost == "a" else "a"
    (tell,) = of(state.handle(TaskFinished(other, 0, 1 if other == "b" else 0, ok()), now=8.0), Tell)
    assert tell.candidate_id == 0 and state.done


def test_a_duplicated_task_times_out_once_from_its_first_start():
    a, b = FakeWorker("a"), FakeWorker("b")
    state, _ = started_state(7, [a, b], fit_timeout=8.0)
    for task_id in range(1, 7):
        state.handle(TaskFinished("b", task_id, 0, ok()), now=float(task_id))
    (dup,) = of(state.handle(Tick(6.5)), Dispatch)  # task 0, stuck on a since 0 s, also on b
    commands = state.handle(Tick(8.5))
    assert sorted(c.worker.name for c in of(commands, Abandon)) == ["a", "b"]
    assert len(of(commands, Tell)) == 1 and state.done
    assert "fit_timeout=8 s" in state.fold_results[0][0].error


# -- copies of subsampled and pruned tasks (fault tolerance meets adaptive search) --------


def test_straggler_and_requeued_copies_keep_the_split_and_the_fold():
    from hpsearch.scheduler.state import Proposed
    from hpsearch.strategies.base import Candidate

    a, b = FakeWorker("a"), FakeWorker("b")
    state = SchedulerState(n_folds=2, lookahead=0, split_offsets={50: 10})
    state.start(now=0.0)
    for worker in (a, b):
        state.handle(WorkerJoined(worker), now=0.0)
    cands = [Candidate(i, {"x": i}, n_samples=50) for i in range(4)]
    commands = state.handle(Proposed(cands, True), now=0.0)
    first = {d.task.task_id: d.task for d in of(commands, Dispatch)}
    assert first[0].fold == 10 and first[1].fold == 11  # task 1 is fold 1, on split 11
    now = 0.0
    for task_id in range(1, 8):  # b runs the rest, 1 s each, while a is stuck on task 0
        now += 1.0
        state.handle(TaskFinished("b", task_id, 0, ok()), now=now)
    assert not state.queue
    (dup,) = of(state.handle(Tick(now + 0.1)), Dispatch)
    assert dup.worker is b and dup.task.task_id == 0 and dup.task.attempt == 1
    assert (dup.task.fold, dup.task.candidate_id, dup.task.params) == (10, 0, {"x": 0})
    # both copies die with their workers: the requeued task still runs on split 10
    state.handle(WorkerLost("a", "killed"), now=now + 0.2)
    state.handle(WorkerLost("b", "killed"), now=now + 0.3)
    assert list(state.queue) == [0]
    c = FakeWorker("c")
    (again,) = of(state.handle(WorkerJoined(c), now=now + 0.4), Dispatch)
    assert (again.task.task_id, again.task.fold, again.task.attempt) == (0, 10, 2)
    (tell,) = of(state.handle(TaskFinished("c", 0, 2, ok(0.5)), now=now + 1), Tell)
    assert tell.candidate_id == 0 and state.tasks[0].fold == 0
    assert state.results()[0][1][0].test_scores["score"] == 0.5  # recorded in CV fold 0


def test_a_running_fold_of_a_pruned_candidate_holds_its_copy_until_it_reports():
    from hpsearch.scheduler.pruning import PairedPruner
    from hpsearch.scheduler.state import Proposed
    from hpsearch.strategies.base import Candidate

    w = FakeWorker("w", slots=2)
    state = SchedulerState(n_folds=4, lookahead=0, pruner=PairedPruner())
    state.start(now=0.0)
    state.handle(WorkerJoined(w), now=0.0)
    state.handle(Proposed([Candidate(0, {"x": 0}), Candidate(1, {"x": 1})], True), now=0.0)
    for task_id in range(4):
        state.handle(TaskFinished("w", task_id, 0, ok(0.9 + task_id / 100)), now=1.0 + task_id)
    state.handle(TaskFinished("w", 4, 0, ok(0.5)), now=6.0)  # task 6 starts
    state.handle(TaskFinished("w", 5, 0, ok(0.52)), now=7.0)  # candidate 1 pruned
    assert state.pruned == {1} and state.done
    # task 6 is done as data, but its copy still holds its slot on w: a leftover
    assert set(state.workers["w"].running) == {6} and state.in_flight == 1
    assert [(wk.name, t.task_id) for wk, t in state.leftovers()] == [("w", 6)]
    assert of(state.handle(Tick(100.0)), Dispatch) == []  # never a straggler copy of it
    assert state.handle(TaskFinished("w", 6, 0, ok(0.99)), now=101.0) == []
    assert state.in_flight == 0 and state.workers["w"].free == 2 and state.leftovers() == []
