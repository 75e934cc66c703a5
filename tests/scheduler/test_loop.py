"""The scheduler loop: events handled on the thread that reports them."""

from __future__ import annotations

import threading

import pytest
from sklearn.datasets import load_iris
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold
from sklearn.tree import DecisionTreeClassifier

from hpsearch import ThreadWorkers
from hpsearch.evaluation import EvaluationContext, evaluate
from hpsearch.scheduler import run_scheduler
from hpsearch.strategies import GridStrategy
from hpsearch.workers import TaskFinished, WorkerJoined

SPACE = {"max_depth": [1, 2, 3, 4, 5, None], "min_samples_leaf": list(range(1, 26))}  # 150 candidates


def make_context(n_splits=3):
    X, y = load_iris(return_X_y=True)
    splits = list(KFold(n_splits, shuffle=True, random_state=0).split(X))
    return EvaluationContext(DecisionTreeClassifier(random_state=0), X, y, splits,
                             {"score": get_scorer("accuracy")})


class InlineWorker:
    """A worker that fits in ``submit`` and reports before returning: every result
    arrives while the scheduler is still dispatching (a nested ``emit``)."""

    prefetch = 0

    def __init__(self, name, context, emit, fail=False):
        self.name, self.slots = name, 1
        self._context, self._emit, self._fail = context, emit, fail
        self.ran = 0

    def submit(self, task):
        if self._fail:
            raise RuntimeError("this worker cannot take tasks")
        self.ran += 1
        self._emit(TaskFinished(self.name, task.task_id, task.attempt,
                                evaluate(self._context, task.params, task.fold)))

    def close(self):
        pass


class InlinePool:
    def __init__(self, *names_and_failures):
        self.spec = names_and_failures or (("inline", False),)
        self.workers = []

    def start(self, context, emit):
        for name, fail in self.spec:
            worker = InlineWorker(name, context, emit, fail)
            self.workers.append(worker)
            emit(WorkerJoined(worker))

    def stop(self):
        pass


def expected_scores(context):
    """Each candidate's fold scores, computed one by one without a scheduler."""
    return [[evaluate(context, c.params, fold).test_scores["score"] for fold in range(context.n_splits)]
            for c in GridStrategy(SPACE).ask(10_000)]


def scores(results):
    return [[r.test_scores["score"] for r in folds] for _, folds in results]


class AllAtOnce(GridStrategy):
    """Proposes every candidate at the first ask: the queue holds every task."""

    def ask(self, n):
        return super().ask(10_000)


def test_results_reported_from_inside_submit_are_queued_not_recursed():
    # 450 queued tasks, each reported inside the submit of the one before: were nested
    # events handled by recursion, this would exceed Python's recursion limit.
    context = make_context()
    pool = InlinePool()
    results = run_scheduler(AllAtOnce(SPACE), [pool], context, score_key="score")
    assert [c.id for c, _ in results] == list(range(150))
    assert scores(results) == expected_scores(context)
    assert pool.workers[0].ran == 450


def test_events_from_many_threads_at_once_are_each_recorded_once():
    context = make_context()
    inline = InlinePool()
    # The threads join first: the inline worker alone would finish tasks as fast as they come.
    results = run_scheduler(GridStrategy(SPACE), [ThreadWorkers(4, inner_threads=1), inline], context,
                            score_key="score")
    assert scores(results) == expected_scores(context)
    assert 0 < inline.workers[0].ran < 450  # both pools took part


def test_progress_is_reported_on_the_callers_thread_in_completion_order():
    seen = []
    run_scheduler(GridStrategy(SPACE), [ThreadWorkers(2, inner_threads=1)], make_context(), score_key="score",
                  on_candidate=lambda p: seen.append((threading.current_thread(), p.candidates_done, p.tasks_done)))
    assert {t for t, _, _ in seen} == {threading.main_thread()}
    assert [n for _, n, _ in seen] == list(range(1, 151))
    tasks_done = [n for _, _, n in seen]
    assert tasks_done == sorted(tasks_done) and tasks_done[-1] == 450


def test_a_worker_whose_submit_raises_is_lost_and_its_tasks_run_elsewhere():
    context = make_context()
    pool = InlinePool(("broken", True), ("good", False))
    results = run_scheduler(GridStrategy(SPACE), [pool], context, score_key="score")
    assert scores(results) == expected_scores(context)
    assert pool.workers[1].ran == 450


def test_an_error_raised_while_handling_an_event_ends_the_search():
    class Duplicate(GridStrategy):
        def ask(self, n):  # a strategy bug: it proposes a candidate twice
            out = super().ask(n)
            return out + out[:1]

    with pytest.raises(ValueError, match="proposed candidate id 0 twice"):
        run_scheduler(Duplicate(SPACE), [InlinePool()], make_context(), score_key="score")
    assert not [t for t in threading.enumerate() if t.name.startswith("hpsearch-")]


def test_a_tagged_strategy_is_asked_where_the_strategy_it_wraps_would_be():
    """Verbose searches and callbacks wrap the strategy (candidates carry their index):
    an inline strategy stays inline, a threaded one stays on the strategy thread."""
    from hpsearch._engine import _Tagged

    class Recording(GridStrategy):
        def __init__(self, space, inline):
            super().__init__(space)
            self.inline, self.threads = inline, set()

        def ask(self, n):
            self.threads.add(threading.current_thread().name)
            return super().ask(n)

    for inline in (True, False):
        strategy = Recording({"max_depth": [1, 2, 3]}, inline)
        tagged = _Tagged(strategy)
        assert tagged.inline is inline
        results = run_scheduler(tagged, [ThreadWorkers(2, inner_threads=1)], make_context(), score_key="score")
        assert len(results) == 3
        assert ("hpsearch-strategy" in strategy.threads) is not inline, strategy.threads
