"""Prefix affinity in the scheduler state machine: task order and routing, no sockets."""

from __future__ import annotations

from hpsearch.evaluation import FoldResult
from hpsearch.scheduler.state import Dispatch, Proposed, SchedulerState
from hpsearch.strategies.base import Candidate
from hpsearch.workers.base import TaskFinished, WorkerJoined, WorkerLost
from tests.scheduler.test_state import FakeWorker, of


def prefix_of(params):
    return params["prefix"]


def ok() -> FoldResult:
    return FoldResult({"score": 1.0}, fit_time=0.1, score_time=0.01, n_test_samples=10)


def candidates(prefixes, start=0):
    return [Candidate(start + i, {"prefix": p, "C": i}) for i, p in enumerate(prefixes)]


def routed(commands):
    return [(d.worker.name, d.task.params["prefix"], d.task.fold, d.task.candidate_id) for d in of(commands, Dispatch)]


def finish(state, worker, dispatches):
    commands = []
    for d in dispatches:
        commands += state.handle(TaskFinished(worker, d.task.task_id, d.task.attempt, ok()))
    return commands


def test_tasks_are_grouped_by_prefix_then_fold():
    state = SchedulerState(n_folds=2, lookahead=0, affinity=prefix_of)
    state.start()
    state.handle(Proposed(candidates(["a", "b", "a", "b"]), finished=True))
    order = [(state.tasks[t].task.params["prefix"], state.tasks[t].task.fold, state.tasks[t].task.candidate_id)
             for t in state.queue]
    assert order == [("a", 0, 0), ("a", 0, 2), ("a", 1, 0), ("a", 1, 2),
                     ("b", 0, 1), ("b", 0, 3), ("b", 1, 1), ("b", 1, 3)]


def test_without_affinity_the_order_is_candidate_then_fold():
    state = SchedulerState(n_folds=2, lookahead=0)
    state.start()
    state.handle(Proposed(candidates(["a", "b"]), finished=True))
    assert [(state.tasks[t].task.candidate_id, state.tasks[t].task.fold) for t in state.queue] == [
        (0, 0), (0, 1), (1, 0), (1, 1)]


def test_free_workers_take_different_prefixes_then_come_back_to_theirs():
    state = SchedulerState(n_folds=1, lookahead=0, affinity=prefix_of)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w1")))
    state.handle(WorkerJoined(FakeWorker("w2")))
    first = of(state.handle(Proposed(candidates(["a", "a", "b", "b"]), finished=True)), Dispatch)
    # w2 does not take the second "a" (w1 computes it): it starts on "b".
    assert routed(first) == [("w1", "a", 0, 0), ("w2", "b", 0, 2)]
    # Each worker, when free, takes the queued task of the prefix it computed.
    after_w2 = finish(state, "w2", [first[1]])
    assert routed(after_w2) == [("w2", "b", 0, 3)]
    after_w1 = finish(state, "w1", [first[0]])
    assert routed(after_w1) == [("w1", "a", 0, 1)]


def test_a_free_worker_computes_a_prefix_held_by_a_busy_one_rather_than_idle():
    state = SchedulerState(n_folds=1, lookahead=0, affinity=prefix_of)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w1")))
    first = of(state.handle(Proposed(candidates(["a", "a"]), finished=True)), Dispatch)
    assert routed(first) == [("w1", "a", 0, 0)]
    # w2 joins while w1 is busy: only "a" is queued, and w2 takes it.
    assert routed(state.handle(WorkerJoined(FakeWorker("w2")))) == [("w2", "a", 0, 1)]


def test_a_lost_workers_prefixes_go_elsewhere():
    state = SchedulerState(n_folds=1, lookahead=0, affinity=prefix_of)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w1")))
    state.handle(WorkerJoined(FakeWorker("w2")))
    first = of(state.handle(Proposed(candidates(["a", "b"]), finished=False)), Dispatch)
    assert routed(first) == [("w1", "a", 0, 0), ("w2", "b", 0, 1)]
    finish(state, "w1", [first[0]])
    # w2 is lost with its task and its prefix "b": w1, idle, takes the task over.
    assert routed(state.handle(WorkerLost("w2", "test"))) == [("w1", "b", 0, 1)]
    assert "w2" not in state.workers
    assert list(state.workers["w1"].held) == [("a", 0), ("b", 0)]


def test_affinity_is_per_fold():
    state = SchedulerState(n_folds=2, lookahead=0, affinity=prefix_of)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w1")))
    state.handle(WorkerJoined(FakeWorker("w2")))
    first = of(state.handle(Proposed(candidates(["a", "a"]), finished=True)), Dispatch)
    # Same prefix, two folds: two different cache entries, one per worker.
    assert routed(first) == [("w1", "a", 0, 0), ("w2", "a", 1, 0)]
    assert routed(finish(state, "w2", [first[1]])) == [("w2", "a", 1, 1)]
    assert routed(finish(state, "w1", [first[0]])) == [("w1", "a", 0, 1)]


def test_affinity_memory_is_bounded():
    state = SchedulerState(n_folds=1, lookahead=0, affinity=prefix_of, affinity_memory=3)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w1", slots=10)))
    state.handle(Proposed(candidates([f"p{i}" for i in range(8)]), finished=True))
    assert list(state.workers["w1"].held) == [("p5", 0), ("p6", 0), ("p7", 0)]


def test_exclusive_affinity_follows_the_worker_a_configuration_was_last_sent_to():
    # Incremental training: the key names a model one worker keeps. When a free worker
    # trains it again elsewhere (its holder was busy), the next continuation follows it.
    state = SchedulerState(n_folds=1, lookahead=0, affinity=prefix_of, affinity_exclusive=True)
    state.start()
    state.handle(WorkerJoined(FakeWorker("w1")))
    first = of(state.handle(Proposed(candidates(["m", "m", "m"]), finished=True)), Dispatch)
    assert routed(first) == [("w1", "m", 0, 0)]
    assert routed(state.handle(WorkerJoined(FakeWorker("w2")))) == [("w2", "m", 0, 1)]
    assert "m" not in {g[0] for g in state.workers["w1"].held}  # w2 holds it now, alone
    # w1 frees first and nothing else is queued: it takes the last "m" task (computing
    # beats idling) and becomes its only holder.
    again = finish(state, "w1", [first[0]])
    assert routed(again) == [("w1", "m", 0, 2)]
    assert ("m", 0) in state.workers["w1"].held and ("m", 0) not in state.workers["w2"].held
