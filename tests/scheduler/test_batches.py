"""Batched tiny tasks in the state machine alone: fake workers, virtual time."""

from __future__ import annotations

from dataclasses import dataclass

from hpsearch.evaluation import FoldResult
from hpsearch.scheduler.state import Ask, Dispatch, DispatchBatch, Proposed, SchedulerState, Tick
from hpsearch.strategies.base import Candidate
from hpsearch.workers.base import Results, TaskFinished, WorkerJoined, WorkerLost


@dataclass
class BatchWorker:
    """A worker that takes batches (it has ``submit_many``); the loop calls it, never the state."""

    name: str
    slots: int = 1
    prefetch: int = 1

    def submit(self, task):
        raise AssertionError("the state machine must not call workers")

    def submit_many(self, tasks):
        raise AssertionError("the state machine must not call workers")

    def close(self):
        pass


@dataclass
class PlainWorker:
    name: str
    slots: int = 1
    prefetch: int = 1

    def submit(self, task):
        raise AssertionError("the state machine must not call workers")

    def close(self):
        pass


def took(seconds: float) -> FoldResult:
    return FoldResult({"score": 1.0}, fit_time=seconds, score_time=0.0, n_test_samples=10)


def sent(commands) -> list[tuple[str, list[int]]]:
    """(worker, task ids) per Dispatch / DispatchBatch, in order."""
    out = []
    for c in commands:
        if isinstance(c, Dispatch):
            out.append((c.worker.name, [c.task.task_id]))
        elif isinstance(c, DispatchBatch):
            out.append((c.worker.name, [t.task_id for t in c.tasks]))
    return out


def finish(state, worker, task_ids, seconds, now):
    """Report the tasks' results together, as a worker's RESULTS message does."""
    events = tuple(
        TaskFinished(worker, tid, state.tasks[tid].copies[worker].task.attempt, took(seconds)) for tid in task_ids
    )
    return state.handle(Results(events), now)


def started(n_candidates: int, *workers, batch_seconds: float | None = 0.02, n_folds: int = 1) -> SchedulerState:
    state = SchedulerState(n_folds=n_folds, lookahead=0, batch_seconds=batch_seconds, max_batch=64, batch_after=4)
    state.start(0.0)
    for w in workers:
        state.handle(WorkerJoined(w), 0.0)
    return state


def test_first_tasks_go_one_by_one_then_batches_sized_from_task_times():
    state = started(0, BatchWorker("w"))
    commands = state.handle(Proposed([Candidate(i, {"x": i}) for i in range(400)], True), 0.0)
    assert sent(commands) == [("w", [0]), ("w", [1])]  # times unknown: slots + prefetch, one each
    commands = finish(state, "w", [0, 1], 0.001, 0.01)
    assert state.batch == 1  # 2 times known, 4 needed
    assert sent(commands) == [("w", [2]), ("w", [3])]
    commands = finish(state, "w", [2, 3], 0.001, 0.02)
    # 1 ms a task, 20 ms a batch: 16 (the largest power of two <= 20); room for 2 batches
    assert state.batch == 16
    assert sent(commands) == [("w", list(range(4, 20))), ("w", list(range(20, 36)))]


def test_a_batch_goes_out_whole_once_there_is_room_for_it():
    state = started(0, BatchWorker("w"))
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(400)], True), 0.0)
    finish(state, "w", [0, 1], 0.001, 0.01)
    finish(state, "w", [2, 3], 0.001, 0.02)
    assert state.in_flight == 32
    assert sent(finish(state, "w", list(range(4, 10)), 0.001, 0.03)) == []  # 6 free of 16: wait
    commands = finish(state, "w", list(range(10, 20)), 0.001, 0.04)
    assert sent(commands) == [("w", list(range(36, 52)))]


def test_the_tail_of_the_queue_goes_out_as_a_smaller_batch():
    state = started(0, BatchWorker("w"))
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(40)], True), 0.0)
    finish(state, "w", [0, 1], 0.001, 0.01)
    commands = finish(state, "w", [2, 3], 0.001, 0.02)
    assert sent(commands) == [("w", list(range(4, 20))), ("w", list(range(20, 36)))]
    commands = finish(state, "w", list(range(4, 20)), 0.001, 0.03)
    assert sent(commands) == [("w", [36, 37, 38, 39])]


def test_batches_shrink_when_tasks_get_longer():
    state = started(0, BatchWorker("w"))
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(1000)], True), 0.0)
    finish(state, "w", [0, 1], 0.001, 0.01)
    finish(state, "w", [2, 3], 0.001, 0.02)
    assert state.batch == 16
    finish(state, "w", list(range(4, 20)), 0.01, 0.2)  # now 10 ms a task: 2 a batch
    finish(state, "w", list(range(20, 36)), 0.01, 0.4)
    assert state.batch == 2
    # a task as long as the target is never batched
    state2 = started(0, BatchWorker("w"))
    state2.handle(Proposed([Candidate(i, {"x": i}) for i in range(100)], True), 0.0)
    finish(state2, "w", [0, 1], 0.05, 0.1)
    commands = finish(state2, "w", [2, 3], 0.05, 0.2)
    assert state2.batch == 1 and sent(commands) == [("w", [4]), ("w", [5])]


def test_workers_without_submit_many_and_searches_without_batching_get_single_tasks():
    state = started(0, PlainWorker("p"))
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(100)], True), 0.0)
    finish(state, "p", [0, 1], 0.001, 0.01)
    commands = finish(state, "p", [2, 3], 0.001, 0.02)
    assert sent(commands) == [("p", [4]), ("p", [5])]
    off = started(0, BatchWorker("w"), batch_seconds=None)
    off.handle(Proposed([Candidate(i, {"x": i}) for i in range(100)], True), 0.0)
    finish(off, "w", [0, 1], 0.001, 0.01)
    commands = finish(off, "w", [2, 3], 0.001, 0.02)
    assert off.batch == 1 and sent(commands) == [("w", [4]), ("w", [5])]


def test_a_plain_worker_beside_a_batched_one_is_not_starved():
    state = started(0, BatchWorker("w"), PlainWorker("p"))
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(400)], True), 0.0)
    for tid in (0, 2):
        state.handle(TaskFinished("w", tid, 0, took(0.001)), 0.01)
    # the batched worker now has room for batches of 1 only; times known after 4
    state.handle(TaskFinished("p", 1, 0, took(0.001)), 0.01)
    commands = state.handle(TaskFinished("p", 3, 0, took(0.001)), 0.02)
    assert state.batch == 16
    # w holds 2 single tasks: room for one batch of 16; p takes one task
    assert [(w, len(tids)) for w, tids in sent(commands)] == [("w", 16), ("p", 1)]
    # w has no room for a whole batch; p finishing a task gets the next one at once
    commands = state.handle(TaskFinished("p", sent(commands)[-1][1][0], 0, took(0.001)), 0.03)
    assert [(w, len(tids)) for w, tids in sent(commands)] == [("p", 1)]


def test_a_worker_lost_with_batches_in_flight_loses_nothing():
    state = started(0, BatchWorker("a"), BatchWorker("b"))
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(200)], True), 0.0)
    finish(state, "a", [0, 2], 0.001, 0.01)
    finish(state, "b", [1, 3], 0.001, 0.01)
    finish(state, "a", sorted(state.workers["a"].running), 0.001, 0.02)
    held = list(state.workers["a"].running)  # dispatch order
    assert len(held) == 32 and state.batch == 16
    commands = state.handle(WorkerLost("a", "killed"), 0.03)
    assert sent(commands) == []  # b has no room for a whole batch
    assert list(state.queue)[: len(held)] == held  # every task back at the front, in order
    # only the task that was running counts a death (the rest waited in a's queue)
    assert [state.tasks[t].deaths for t in held] == [1] + [0] * 31
    commands = finish(state, "b", list(state.workers["b"].running), 0.001, 0.04)
    again = [tid for _, tids in sent(commands) for tid in tids]
    assert again == held
    assert all(state.tasks[t].copies["b"].task.attempt == 1 for t in held)
    # the first result wins: a late result of the lost worker's copy is ignored
    state.handle(TaskFinished("a", held[0], 0, took(0.001)), 0.05)
    assert state.fold_results[held[0] // 1][0] is not None
    assert "b" in state.tasks[held[0]].copies


def test_time_limits_stay_per_task_inside_a_batch():
    state = SchedulerState(n_folds=1, lookahead=0, batch_seconds=0.02, batch_after=4, fit_timeout=1.0)
    state.start(0.0)
    state.handle(WorkerJoined(BatchWorker("w")), 0.0)
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(100)], True), 0.0)
    finish(state, "w", [0, 1], 0.001, 0.01)
    finish(state, "w", [2, 3], 0.001, 0.02)
    batch = sorted(state.workers["w"].running)
    # the first task of the batch hangs: only it passes the limit, the others never started
    commands = state.handle(Tick(1.5), 1.5)
    failed = [c for c in commands if type(c).__name__ == "Abandon"]
    assert [a.task.task_id for a in failed] == [batch[0]]
    assert state.fold_results[batch[0]][0].error.startswith("FitTimeoutError")
    assert all(state.fold_results[t][0] is None for t in batch[1:])


def test_idle_slot_tasks_never_go_in_a_batch():
    state = SchedulerState(n_folds=1, lookahead=0, batch_seconds=0.02, max_batch=64, batch_after=4, idle_asks=True)
    state.start(0.0)
    state.handle(WorkerJoined(BatchWorker("w", slots=4, prefetch=0)), 0.0)
    state.handle(Proposed([Candidate(i, {"x": i}) for i in range(5)], False), 0.0)
    commands = finish(state, "w", [0, 1, 2, 3], 0.001, 0.01)
    assert state.batch == 16 and sent(commands) == [("w", [4])]
    assert len([c for c in commands if isinstance(c, Ask)]) == 1  # for the 64 tasks a batched worker holds
    commands = state.handle(Proposed([], False), 0.01)  # nothing until candidate 4's score
    assert [c for c in commands if isinstance(c, Ask)] == [Ask(3, idle=True)]
    commands = state.handle(Proposed([Candidate(i, {"x": i}) for i in range(5, 11)], False, idle=True), 0.01)
    assert sent(commands) == [("w", [5]), ("w", [6]), ("w", [7])]  # one by one, into the 3 idle slots
    commands = finish(state, "w", [4], 0.001, 0.02)
    assert sent(commands) == [("w", [8])]  # into the slot freed
    commands = state.handle(Proposed([Candidate(i, {"x": i}) for i in range(11, 14)], False), 0.02)
    assert sent(commands) == [("w", [11, 12, 13])]  # the regular batch stops before the idle tasks
    assert list(state.queue) == [9, 10]
