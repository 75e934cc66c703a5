"""DaskWorkers on real LocalClusters with worker processes (no mocks)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from hpsearch import DaskWorkers, Integer, Real, run_search
from hpsearch.errors import InvalidParameterError, NoWorkersError
from hpsearch.workers.dask import Join, Lose, Membership, Starve

from .helpers import GateEstimator, MarkerEstimator, assert_same_results

distributed = pytest.importorskip("distributed")

X, Y = load_iris(return_X_y=True)
GRID = {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1, "scale"]}


def local_cluster(n_workers: int) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
        worker_dashboard_address=None,
    )


@pytest.fixture(scope="module")
def pool(cluster):
    with DaskWorkers(cluster) as pool:
        yield pool


# -- membership: the pure state machine --------------------------------------------------


def test_membership_joins_listed_workers_and_loses_ready_ones():
    m = Membership(join_timeout=10.0, now=0.0)
    assert m.listed({"a": 2, "b": 0}, now=0.0) == [Join("a", 2)]  # no threads, no tasks
    assert m.listed({"a": 2}, now=0.5) == []  # already joining
    assert m.ready("a", now=1.0) and not m.ready("a", now=1.1)  # announced once
    assert m.failed("a", "closed", now=2.0) == [Lose("a", "closed")]
    assert m.failed("a", "closed again", now=2.1) == []  # reported once
    assert m.listed({"a": 2}, now=2.5) == []  # dead while the scheduler still lists it
    assert m.listed({}, now=3.0) == []
    assert m.listed({"a": 2}, now=3.5) == [Join("a", 2)]  # delisted, then back: a new worker


def test_membership_reports_a_removed_worker_and_starvation_once():
    m = Membership(join_timeout=5.0, now=0.0)
    m.listed({"a": 1}, now=0.0)
    m.ready("a", now=0.1)
    assert m.listed({}, now=1.0) == [Lose("a", "it left the Dask cluster")]
    assert m.tick(now=5.9) == []
    assert m.tick(now=6.0) == [Starve(5.0)]
    assert m.tick(now=60.0) == []


def test_membership_joining_worker_that_fails_is_not_lost():
    m = Membership(join_timeout=5.0, now=0.0)
    m.listed({"a": 1}, now=0.0)
    assert m.failed("a", "cannot load", now=0.5) == []
    assert not m.ready("a", now=0.6)


# -- searches on a shared cluster ----------------------------------------------------------


@pytest.mark.parametrize("strategy, space, kwargs", [
    ("grid", GRID, {}),
    ("random", {"C": Real(1e-2, 1e2, prior="log-uniform"), "gamma": Real(1e-3, 1.0)}, {"n_iter": 8}),
    ("bayes", {"C": Real(1e-2, 1e2, prior="log-uniform"), "degree": Integer(1, 3)}, {"n_iter": 6}),
])
def test_results_equal_two_threads(pool, strategy, space, kwargs):
    dask = run_search(SVC(), space, X, Y, cv=3, strategy=strategy, random_state=0, workers=pool,
                      progress=False, **kwargs)
    threads = run_search(SVC(), space, X, Y, cv=3, strategy=strategy, random_state=0, workers=2,
                         progress=False, **kwargs)
    assert_same_results(dask, threads)


def test_context_sent_once_per_worker_and_never_again(cluster):
    # min_workers=2: the search starts once both workers hold the data (with one, the
    # first could finish the six tasks before the second's transfer is counted).
    with DaskWorkers(cluster, min_workers=2) as pool:
        _context_sent_once_per_worker_and_never_again(pool)


def _context_sent_once_per_worker_and_never_again(pool):
    X2 = np.ascontiguousarray(X[::-1] + 1.0)  # data no other search used
    before = pool.stats["contexts_sent"]
    loaded = {a: s["counters"].get("contexts_loaded", 0) for a, s in pool.worker_stats().items()}
    first = run_search(SVC(), {"C": [1.0, 2.0]}, X2, Y[::-1], cv=3, workers=pool, progress=False)
    assert pool.stats["contexts_sent"] == before + 2  # once to each of the 2 Dask workers
    after = {a: s["counters"]["contexts_loaded"] for a, s in pool.worker_stats().items()}
    assert {a: after[a] - loaded[a] for a in after} == dict.fromkeys(after, 1)
    tasks = pool.stats["tasks_sent"]
    second = run_search(SVC(), {"C": [1.0, 2.0]}, X2, Y[::-1], cv=3, workers=pool, progress=False)
    assert pool.stats["contexts_sent"] == before + 2  # the workers still hold it: nothing sent
    assert {a: s["counters"]["contexts_loaded"] for a, s in pool.worker_stats().items()} == after
    assert pool.stats["tasks_sent"] == tasks + 6
    assert_same_results(first, second)


def test_dask_and_threads_in_one_search(pool):
    mixed = run_search(SVC(), GRID, X, Y, cv=3, workers=[pool, 1], progress=False)
    threads = run_search(SVC(), GRID, X, Y, cv=3, workers=1, progress=False)
    assert_same_results(mixed, threads)


def test_a_client_stays_open_after_the_search(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        result = run_search(SVC(), {"C": [1.0]}, X, Y, cv=2, workers=DaskWorkers(client), progress=False)
        assert result.best_params_ == {"C": 1.0}
        assert client.status == "running"


# -- errors --------------------------------------------------------------------------------


def test_unreachable_scheduler_fails_clearly_before_any_fit(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    marker = tmp_path / "fitted"
    start = time.monotonic()
    with pytest.raises(NoWorkersError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:\d+' "
                                             r"within connect_timeout=2 s"):
        run_search(MarkerEstimator(marker=str(marker)), {"c": [1.0]}, X, cv=2,
                   workers=DaskWorkers(f"tcp://127.0.0.1:{port}", connect_timeout=2), progress=False)
    assert time.monotonic() - start < 30
    assert not marker.exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"client_or_address": 3}, "needs a distributed.Client"),
    ({"client_or_address": "tcp://h:8786", "min_workers": -1}, "min_workers must be an integer >= 0"),
    ({"client_or_address": "tcp://h:8786", "join_timeout": 0}, "join_timeout must be a positive"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        DaskWorkers(**kwargs)


def test_too_few_workers_fails_within_join_timeout(pool, cluster):
    with DaskWorkers(cluster, min_workers=3, join_timeout=1) as short:
        with pytest.raises(NoWorkersError, match=r"only 2 of min_workers=3 Dask worker\(s\) were ready"):
            run_search(SVC(), {"C": [1.0]}, X, Y, cv=2, workers=short, progress=False)


# -- a changing cluster --------------------------------------------------------------------


def _run_in_thread(**kwargs):
    """run_search on a thread; returns (thread, box) where box gets 'result' or 'error'."""
    box: dict = {}

    def run():
        try:
            box["result"] = run_search(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - the test thread re-raises it
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _wait(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkilled_worker_loses_nothing(cluster, tmp_path):
    gate = tmp_path / "gate"
    space = {"c": [float(c) for c in range(8)]}
    estimator = GateEstimator(gate=str(gate))
    with DaskWorkers(cluster, join_timeout=60) as pool:
        pids = pool.client.run(os.getpid)
        thread, box = _run_in_thread(estimator=estimator, space=space, X=X, cv=3, workers=pool,
                                     progress=False)
        # Both workers hold tasks blocked in their fits: kill one of them mid-fit.
        _wait(lambda: pool.stats["tasks_sent"] >= 4, what="tasks on both workers")
        victim = sorted(pids)[0]
        os.kill(pids[victim], signal.SIGKILL)
        _wait(lambda: pool.stats["workers_lost"] >= 1, what="the lost worker")
        gate.touch()
        thread.join(120)
        assert not thread.is_alive() and "error" not in box, box.get("error")
        pool.client.wait_for_workers(2, timeout=120)  # the nanny restarts it: the next tests have 2
    undisturbed = run_search(estimator, space, X, cv=3, workers=2, progress=False)
    result = box["result"]
    assert_same_results(result, undisturbed)
    assert len(result.cv_results_["params"]) == 8  # every candidate recorded once
    assert pool.stats["results"] >= 24


def test_tiny_tasks_travel_in_batches_with_the_same_results(pool):
    space = {"max_depth": list(range(1, 11)), "min_samples_leaf": [1, 2, 4, 8]}
    batches = pool.stats["batches_sent"]
    dask = run_search(DecisionTreeClassifier(random_state=0), space, X, Y, cv=5, workers=pool, progress=False)
    assert pool.stats["batches_sent"] > batches  # 200 fits of a millisecond: batched
    threads = run_search(DecisionTreeClassifier(random_state=0), space, X, Y, cv=5, workers=2, progress=False)
    assert_same_results(dask, threads)


def test_every_thread_of_a_worker_has_a_task_waiting(tmp_path):
    """A worker of 2 threads holds 4 tasks: 2 running, and one waiting behind each."""
    gate = tmp_path / "gate"
    space = {"c": [float(c) for c in range(4)]}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, DaskWorkers(cluster) as pool:
        thread, box = _run_in_thread(estimator=GateEstimator(gate=str(gate)), space=space, X=X, cv=3,
                                     workers=pool, progress=False)
        _wait(lambda: pool.stats["tasks_sent"] >= 4, what="4 tasks on the worker")
        time.sleep(0.3)
        assert pool.stats["tasks_sent"] == 4 and pool.stats["results"] == 0
        gate.touch()
        thread.join(120)
        assert not thread.is_alive() and "error" not in box, box.get("error")


@pytest.mark.slow
def test_sigkilled_worker_holding_batches_loses_nothing(cluster, tmp_path):
    """The first 20 candidates fit at once (so tasks go out in batches), the others wait
    for the gate: a worker killed while it holds batches loses none of their tasks."""
    # 40 candidates x 3 folds; sent: 60 free tasks, then batches that block at the gate
    gate = tmp_path / "gate"
    space = {"c": [float(c) for c in range(40)]}
    estimator = GateEstimator(gate=str(gate), free_below=20.0)
    with DaskWorkers(cluster, join_timeout=60) as pool:
        pids = pool.client.run(os.getpid)
        thread, box = _run_in_thread(estimator=estimator, space=space, X=X, cv=3, workers=pool,
                                     progress=False)
        # Every task sent beyond the 60 free ones waits at the gate (a batch answers
        # once all its tasks ran): the workers hold batches that cannot finish.
        _wait(lambda: pool.stats["batches_sent"] >= 2 and pool.stats["tasks_sent"] >= 80,
              what="batches waiting at the gate")
        time.sleep(0.5)
        os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
        _wait(lambda: pool.stats["workers_lost"] >= 1, what="the lost worker")
        gate.touch()
        thread.join(120)
        assert not thread.is_alive() and "error" not in box, box.get("error")
        pool.client.wait_for_workers(2, timeout=120)  # the nanny restarts it: the next tests have 2
    result = box["result"]
    assert len(result.cv_results_["params"]) == 40  # every candidate recorded once
    assert_same_results(result, run_search(estimator, space, X, cv=3, workers=2, progress=False))


@pytest.mark.slow
def test_workers_added_mid_search_run_tasks(tmp_path):
    gate = tmp_path / "gate"
    space = {"c": [float(c) for c in range(10)]}
    estimator = GateEstimator(gate=str(gate))
    with local_cluster(1) as cluster, DaskWorkers(cluster, join_timeout=60) as pool:
        first = set(pool.client.scheduler_info()["workers"])
        thread, box = _run_in_thread(estimator=estimator, space=space, X=X, cv=3, workers=pool,
                                     progress=False)
        _wait(lambda: pool.stats["tasks_sent"] >= 2, what="tasks on the first worker")
        cluster.scale(3)
        # The new workers join the search while the first one is blocked: they get tasks.
        _wait(lambda: pool.stats["contexts_sent"] >= 3, what="the new workers to load the data")
        _wait(lambda: pool.stats["tasks_sent"] >= 6, what="tasks on the new workers")
        gate.touch()
        thread.join(120)
        assert not thread.is_alive() and "error" not in box, box.get("error")
        per_worker = {a: s["counters"].get("tasks", 0) for a, s in pool.worker_stats().items()}
    new = {a: n for a, n in per_worker.items() if a not in first}
    assert len(new) == 2 and all(n > 0 for n in new.values()), per_worker
    assert_same_results(box["result"], run_search(estimator, space, X, cv=3, workers=2, progress=False))


def test_without_dask_the_error_names_the_extra(monkeypatch):
    from hpsearch.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "distributed", None)  # what an uninstalled package looks like
    pool = DaskWorkers("tcp://scheduler:8786")
    with pytest.raises(MissingDependencyError, match=r"pip install 'hpsearch\[dask\]'"):
        run_search(SVC(), {"C": [1.0]}, X, Y, cv=2, workers=pool, progress=False)
