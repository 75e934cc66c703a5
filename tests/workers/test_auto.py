"""AutoWorkers (``workers=N``): threads, moved to warm local processes when the fits hold the GIL."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV

from hpsearch import ThreadWorkers, run_search
from hpsearch._engine import CallerThreadWorker, make_pools
from hpsearch.workers import auto, local
from hpsearch.workers.auto import AutoWorkers, ParallelProbe, TaskTiming, search_kind, thread_waiting

X, Y = load_iris(return_X_y=True)


class SlowPythonCentroid(ClassifierMixin, BaseEstimator):
    """Nearest class mean, computed in plain Python loops (holds the GIL)."""

    def __init__(self, rounds: int = 200) -> None:
        self.rounds = rounds

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        total = 0.0
        for _ in range(self.rounds * 100):  # pure-Python work
            total += 1.0
        self.means_ = np.array([X[y == c].mean(axis=0) for c in self.classes_]) + 0 * total
        return self

    def predict(self, X):
        return self.classes_[np.argmin(((X[:, None, :] - self.means_[None]) ** 2).sum(axis=2), axis=1)]


def timings(cpu: float, waiting: float | None, ends: list[float], wall: float = 0.2) -> list[TaskTiming]:
    return [TaskTiming(wall=wall, cpu=cpu, waiting=waiting, end=end) for end in ends]


# -- the decision, in virtual time --------------------------------------------------------


def test_threads_asleep_on_the_gil_move_to_warm_processes_at_once():
    probe = ParallelProbe(2, start=0.0, total=100, warm=True)
    assert [probe.record(t) for t in timings(0.1, 0.0, [0.2, 0.2, 0.4, 0.4])] == [False, False, False, True]
    assert probe.verdict == "gil" and probe.move and probe.decided
    assert probe.record(timings(0.1, 0.0, [0.6])[0]) is False  # decided once


def test_threads_in_parallel_stay():
    probe = ParallelProbe(2, start=0.0, total=100, warm=True)
    assert not any(probe.record(t) for t in timings(0.2, 0.0, [0.2, 0.2, 0.4, 0.4]))
    assert probe.decided and probe.verdict == "parallel" and not probe.move


def test_a_loaded_machine_does_not_pass_for_the_gil():
    # Half of each task runnable but off the cores (other programs), none asleep:
    # no processes are started for it, however long the search.
    ends = [0.1, 0.2, 0.3, 0.4]
    probe = ParallelProbe(2, start=0.0, total=10_000, warm=False, start_seconds=2.0)
    assert not any(probe.record(t) for t in timings(0.1, 0.1, ends))
    assert probe.decided and probe.verdict == "unclear" and not probe.move
    # Warm processes get as much of the machine as threads: moving costs little,
    # when the two tasks it reruns are at most a tenth of the work left.
    warm = ParallelProbe(2, start=0.0, total=24, warm=True)
    assert [warm.record(t) for t in timings(0.1, 0.1, ends)][-1] is True
    few = ParallelProbe(2, start=0.0, total=18, warm=True)
    assert not any(few.record(t) for t in timings(0.1, 0.1, ends)) and few.decided


def test_starting_processes_costs_more_on_a_loaded_machine():
    # Asleep on the GIL and also waiting for a core as long as running: a start
    # costs twice the 2 s, so 3.6 s of work left does not pay, 7.6 s does.
    ends = [0.1, 0.2, 0.3, 0.4]
    short = ParallelProbe(2, start=0.0, total=40, warm=False, start_seconds=2.0)
    assert not any(short.record(t) for t in timings(0.05, 0.05, ends)) and short.verdict == "gil"
    long = ParallelProbe(2, start=0.0, total=80, warm=False, start_seconds=2.0)
    assert [long.record(t) for t in timings(0.05, 0.05, ends)][-1] is True


def test_without_run_queue_times_the_cores_busy_decide():
    probe = ParallelProbe(2, start=0.0, total=100, warm=True)
    assert [probe.record(t) for t in timings(0.1, None, [0.2, 0.2, 0.4, 0.4])][-1] is True
    probe = ParallelProbe(2, start=0.0, total=100, warm=True)
    assert not any(probe.record(t) for t in timings(0.2, None, [0.2, 0.2, 0.4, 0.4]))


def test_starting_processes_waits_for_enough_work_left():
    # 0.1 s of search per task: 16 tasks left is 1.6 s, less than the 2 s a start costs.
    small = ParallelProbe(2, start=0.0, total=20, warm=False, start_seconds=2.0)
    assert not any(small.record(t) for t in timings(0.1, 0.0, [0.1, 0.2, 0.3, 0.4]))
    assert small.verdict == "gil" and small.decided and not small.move
    large = ParallelProbe(2, start=0.0, total=40, warm=False, start_seconds=2.0)
    assert [large.record(t) for t in timings(0.1, 0.0, [0.1, 0.2, 0.3, 0.4])][-1] is True
    # A warm pool is worth it for a few tasks, not for the last ones.
    few = ParallelProbe(2, start=0.0, total=12, warm=True)
    assert [few.record(t) for t in timings(0.1, 0.0, [0.1, 0.2, 0.3, 0.4])][-1] is True
    last = ParallelProbe(2, start=0.0, total=8, warm=True)
    assert not any(last.record(t) for t in timings(0.1, 0.0, [0.1, 0.2, 0.3, 0.4])) and last.decided


def test_an_open_ended_search_moves_once_it_ran_as_long_as_a_start_costs():
    probe = ParallelProbe(2, start=0.0, total=None, warm=False, start_seconds=2.0)
    ends = [0.5 * (i + 1) for i in range(6)]  # 0.5 s .. 3.0 s
    assert [probe.record(t) for t in timings(0.25, 0.0, ends, wall=0.5)] == [False] * 3 + [True, False, False]


def test_fits_that_wait_on_no_core_stay_on_threads():
    # Asleep (a sleep, a file, a device) but keeping a tenth of a core busy: no GIL
    # in the way, so no move, however much work is left and even to warm processes.
    probe = ParallelProbe(2, start=0.0, total=10_000, warm=True)
    assert not any(probe.record(t) for t in timings(0.01, 0.0, [0.2, 0.2, 0.4, 0.4]))
    assert probe.decided and probe.verdict == "waiting" and not probe.move


def test_tiny_tasks_are_measured_for_min_seconds_at_least():
    # 2 n tasks of 10 ms are too short a window to tell the GIL from noise: the
    # verdict waits for the first task ending min_seconds after the start.
    probe = ParallelProbe(2, start=0.0, total=1000, warm=True, min_seconds=0.2)
    ends = [0.01 * (i + 1) for i in range(19)]
    assert not any(probe.record(t) for t in timings(0.005, 0.0, ends, wall=0.01)) and probe.verdict is None
    assert probe.record(timings(0.005, 0.0, [0.21], wall=0.01)[0]) is True
    assert probe.verdict == "gil" and probe.count == 20


def test_a_known_gil_bound_search_starts_on_warm_processes():
    probe = ParallelProbe(2, start=0.0, total=100, warm=True, known="gil")
    assert probe.move and probe.decided and probe.verdict == "gil" and probe.known
    few = ParallelProbe(2, start=0.0, total=6, warm=True, known="gil")  # the last tasks: not worth it
    assert not few.move and few.decided


def test_a_known_gil_bound_search_starts_the_processes_once_the_work_left_pays():
    # No probe (the verdict is known): after n tasks, 0.1 s of search per task and
    # 98 tasks left are 9.8 s, worth a 2 s start.
    probe = ParallelProbe(2, start=0.0, total=100, warm=False, known="gil")
    assert not probe.move and not probe.decided
    assert [probe.record(t) for t in timings(0.1, 0.0, [0.1, 0.2])] == [False, True]
    small = ParallelProbe(2, start=0.0, total=12, warm=False, known="gil")
    assert not any(small.record(t) for t in timings(0.1, 0.0, [0.1, 0.2])) and small.decided
    # Still slower to start on a loaded machine: 3 s of work left pays for a start
    # on an idle one, not on one where the tasks waited for a core as long as they ran.
    idle = ParallelProbe(2, start=0.0, total=32, warm=False, known="gil")
    assert [idle.record(t) for t in timings(0.1, 0.0, [0.1, 0.2])] == [False, True]
    loaded = ParallelProbe(2, start=0.0, total=32, warm=False, known="gil")
    assert not any(loaded.record(t) for t in timings(0.05, 0.05, [0.1, 0.2])) and loaded.decided


@pytest.mark.parametrize("verdict", ["parallel", "waiting"])
def test_a_search_known_to_stay_on_threads_is_not_measured(verdict):
    probe = ParallelProbe(2, start=0.0, total=100, warm=True, known=verdict)
    assert probe.decided and probe.verdict == verdict and not probe.move


def test_a_known_verdict_must_be_one_a_probe_gives():
    with pytest.raises(ValueError, match="known must be"):
        ParallelProbe(2, start=0.0, known="unclear")


def test_one_thread_never_moves():
    probe = ParallelProbe(1, start=0.0, total=100, warm=True)
    assert probe.decided and not any(probe.record(t) for t in timings(0.1, 0.0, [1.0, 2.0]))


def test_thread_waiting_counts_up_or_is_unknown():
    first = thread_waiting()
    sum(range(100_000))
    second = thread_waiting()
    assert (first is None and second is None) or (first is not None and second is not None and second >= first)


# -- which pool a number means ------------------------------------------------------------


def test_workers_n_and_n_jobs_n_choose_per_search_n_jobs_none_stays_in_the_caller():
    (pool,), owned = make_pools(2)
    assert isinstance(pool, AutoWorkers) and owned == [pool]
    assert isinstance(make_pools(None, n_jobs=2)[0][0], AutoWorkers)
    assert isinstance(make_pools([2])[0][0], AutoWorkers)
    assert type(make_pools(1)[0][0]) is ThreadWorkers  # one worker: nothing to choose
    assert isinstance(make_pools(None, n_jobs=None)[0][0], CallerThreadWorker)
    with parallel_config(backend="threading"):
        (threads,), _ = make_pools(None, n_jobs=2)
    assert type(threads) is ThreadWorkers  # joblib's threading backend: threads, as scikit-learn
    explicit = ThreadWorkers(2)
    assert make_pools(explicit) == ([explicit], [])


def test_a_small_search_stays_on_threads_and_starts_no_process():
    pool = AutoWorkers(2)
    ours = run_search(SlowPythonCentroid(rounds=1), {"rounds": [1, 2]}, X, Y, cv=3, workers=pool, progress=False)
    assert not pool.moved and local._WARM == {}
    theirs = GridSearchCV(SlowPythonCentroid(rounds=1), {"rounds": [1, 2]}, cv=3).fit(X, Y)
    assert list(ours.cv_results_["mean_test_score"]) == list(theirs.cv_results_["mean_test_score"])


# -- real searches ------------------------------------------------------------------------


@pytest.mark.slow
def test_gil_bound_search_moves_to_processes_and_loses_nothing():
    space = {"rounds": list(range(2000, 2040))}
    pool = AutoWorkers(2)
    try:
        # Warm the process pool first, so that the move happens at once.
        run_search(SlowPythonCentroid(), {"rounds": [1]}, X, Y, cv=2, workers=local.warm_processes(2),
                   progress=False)
        ours = run_search(SlowPythonCentroid(), space, X, Y, cv=3, workers=pool, progress=False)
    finally:
        local.close_warm_processes()
    assert pool.moved  # threads taking turns keep at most one core of the two busy
    theirs = GridSearchCV(SlowPythonCentroid(), space, cv=3).fit(X, Y)
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        assert list(ours.cv_results_[key]) == list(theirs.cv_results_[key])
    assert all(not np.isnan(s) for s in ours.cv_results_["mean_test_score"])


@pytest.mark.slow
def test_a_later_search_of_a_gil_bound_kind_starts_on_the_warm_processes(caplog):
    # What an earlier probe found (set here, as a loaded machine may blur a real probe).
    from types import SimpleNamespace

    auto._remember_verdict(search_kind(SimpleNamespace(estimator=SlowPythonCentroid(), X=X)), "gil")
    space = {"rounds": [3000, 3001, 3002]}
    pool = AutoWorkers(2)
    try:
        run_search(SlowPythonCentroid(), {"rounds": [1]}, X, Y, cv=2, workers=local.warm_processes(2),
                   progress=False)
        with caplog.at_level("INFO", logger="hpsearch"):
            ours = run_search(SlowPythonCentroid(), space, X, Y, cv=3, workers=pool, progress=False)
    finally:
        local.close_warm_processes()
    assert pool.moved and "at its start" in caplog.text
    assert not any("threads-" in r.getMessage() and "joined" in r.getMessage() for r in caplog.records)
    theirs = GridSearchCV(SlowPythonCentroid(), space, cv=3).fit(X, Y)
    assert list(ours.cv_results_["mean_test_score"]) == list(theirs.cv_results_["mean_test_score"])


class CentroidWithHook(SlowPythonCentroid):
    """Takes a fit parameter; a lock there makes the context impossible to pickle."""

    def fit(self, X, y, hook=None):
        return super().fit(X, y)


@pytest.mark.slow
def test_a_known_gil_bound_search_whose_context_cannot_travel_stays_on_threads(caplog):
    from types import SimpleNamespace

    auto._remember_verdict(search_kind(SimpleNamespace(estimator=CentroidWithHook(), X=X)), "gil")
    space = {"rounds": [1, 2, 3, 4]}
    pool = AutoWorkers(2)
    try:
        run_search(SlowPythonCentroid(), {"rounds": [1]}, X, Y, cv=2, workers=local.warm_processes(2),
                   progress=False)
        assert local.warm_pool_ready(2)
        with caplog.at_level("WARNING", logger="hpsearch"):
            ours = run_search(CentroidWithHook(), space, X, Y, cv=3, workers=pool, progress=False,
                              fit_params={"hook": threading.Lock()})
    finally:
        local.close_warm_processes()
    assert not pool.moved and "stays on threads" in caplog.text
    theirs = GridSearchCV(SlowPythonCentroid(), space, cv=3).fit(X, Y)
    assert list(ours.cv_results_["mean_test_score"]) == list(theirs.cv_results_["mean_test_score"])


def test_a_probes_verdict_is_kept_for_the_next_search_of_its_kind():
    from types import SimpleNamespace

    from .helpers import SleepEstimator

    data = np.zeros((20, 2))
    pool = AutoWorkers(2)
    run_search(SleepEstimator(delay=0.5), {"c": [1.0, 2.0]}, data, cv=2, workers=pool, progress=False)
    kind = search_kind(SimpleNamespace(estimator=SleepEstimator(), X=data))
    assert auto._known_verdict(kind) == "waiting"  # sleeping fits keep no core busy, on any machine
    run_search(SleepEstimator(delay=0.01), {"c": [1.0, 2.0]}, data, cv=2, workers=pool, progress=False)
    assert pool._probe.known and not pool.moved  # not measured again


def test_search_kind_is_the_estimators_classes_and_the_datas_shape():
    from types import SimpleNamespace

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def kind(estimator, data=X):
        return search_kind(SimpleNamespace(estimator=estimator, X=data))

    assert kind(make_pipeline(StandardScaler(), SVC())) == kind(make_pipeline(StandardScaler(), SVC(C=3.0)))
    assert kind(make_pipeline(StandardScaler(), SVC())) != kind(make_pipeline(SVC()))
    assert kind(SVC()) != kind(SVC(), X.astype(np.float32))
    assert search_kind(SimpleNamespace(estimator=None, X=X)) is None
    # Halving on n_samples: mostly small fits, whose verdict a full-size search's must not give
    assert kind(SVC()) != search_kind(SimpleNamespace(estimator=SVC(), X=X, subsample_offsets={30: 5}))


@pytest.mark.slow
def test_a_worker_process_killed_after_the_move_loses_nothing():
    space = {"rounds": list(range(1000, 1060))}
    pool = AutoWorkers(2)
    kills: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while not pool.moved and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        for warm in list(local._WARM.values()):
            live = [p for p in list(warm.processes) if p.poll() is None]
            if live:
                os.kill(live[0].pid, signal.SIGKILL)
                kills.append(live[0].pid)
                return

    try:
        run_search(SlowPythonCentroid(), {"rounds": [1]}, X, Y, cv=2, workers=local.warm_processes(2),
                   progress=False)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        ours = run_search(SlowPythonCentroid(), space, X, Y, cv=3, workers=pool, progress=False)
        thread.join(30)
    finally:
        local.close_warm_processes()
    assert pool.moved and len(kills) == 1
    assert ours.fit_failures_ == []
    theirs = GridSearchCV(SlowPythonCentroid(), space, cv=3).fit(X, Y)
    assert list(ours.cv_results_["mean_test_score"]) == list(theirs.cv_results_["mean_test_score"])
