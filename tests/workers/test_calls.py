"""Joblib calls on hpsearch's ZeroMQ workers: the call book in virtual time, then the
"hpsearch" joblib backend on real LocalProcesses and a real remote ``hpsearch-worker``."""

from __future__ import annotations

import functools
import os
import pickle
import signal
import time

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score

import hpsearch  # noqa: F401 - registers the backend
from hpsearch import AutoWorkers, LocalProcesses, RemoteWorkers, ThreadWorkers, warm_processes
from hpsearch.errors import InvalidParameterError
from hpsearch.joblib_backend import _AutoRunner
from hpsearch.workers.local import warm_pool_ready
from hpsearch.serialization import dumps
from hpsearch.workers.calls import MAX_CALL_ATTEMPTS, BufferCache, Call, CallDone, buffer_id, iter_result_messages
from hpsearch.workers.protocol import make_token

from ..clusters.test_joblib_backend import check_sklearn_parallel_calls
from .helpers import pid_then_sleep, spin_pid
from .test_peers import Sim, events, sends, table

X, Y = make_classification(n_samples=1500, n_features=20, random_state=0)  # X: 240 kB, out of band
BIG = np.arange(100_000, dtype=np.float64)  # 800 kB: one out-of-band buffer


# --------------------------------------------------------------------------- the call book


def call(call_id: int, data=BIG) -> Call:
    return Call.from_frames(call_id, dumps(functools.partial(np.sum, data)))


def result_msgs(sim: Sim, call_id: int, value):
    data = pickle.dumps(value)
    for fields in iter_result_messages(call_id, data, None):
        yield sim.msg("CALL_RESULT", **fields)


def test_calls_go_to_the_least_busy_peer_and_each_buffer_once_per_peer():
    t, a, b = table(), Sim("a"), Sim("b")
    a.join(t, 0.0, slots=1)
    b.join(t, 0.0, slots=1)
    out = [o for i in range(5) for o in t.call(call(i), 0.0)]
    # slots + 1 calls each, alternating; the fifth waits for room
    assert sends(out) == [(a.session, "CALL"), (b.session, "CALL")] * 2
    assert [len(o.payload) for o in out] == [3, 3, 2, 2]  # BIG's bytes once per peer
    assert out[0].fields["ids"] == [buffer_id(BIG)] and out[2].fields["sent"] == []
    assert t.stats["call_buffer_bytes_sent"] == 2 * BIG.nbytes
    (msg,) = result_msgs(a, 0, 42.0)
    out = t.receive(a.route, msg, 0.1)
    (done,) = events(out)
    assert isinstance(done, CallDone) and pickle.loads(done.data) == 42.0
    assert sends(out) == [(a.session, "CALL")]  # the waiting call takes the freed room


def test_a_large_result_comes_in_parts_and_only_from_the_session_the_call_went_to():
    t, a, b = table(), Sim("a"), Sim("b")
    a.join(t, 0.0, slots=1)
    b.join(t, 0.0, slots=1)
    t.call(call(1), 0.0)  # to a
    value = np.arange(300_000)  # 2.4 MB: five parts
    assert events(t.receive(b.route, next(result_msgs(b, 1, value)), 0.1)) == []  # b was not sent call 1
    assert t.stats["unassigned_call_results"] == 1
    msgs = list(result_msgs(a, 1, value))
    assert len(msgs) == 5
    outs = [t.receive(a.route, m, 0.2) for m in msgs]
    assert all(events(o) == [] for o in outs[:-1])
    (done,) = events(outs[-1])
    np.testing.assert_array_equal(pickle.loads(done.data), value)


def test_buffers_a_worker_lacks_are_sent_again():
    t, a = table(), Sim("a")
    a.join(t, 0.0, slots=1)
    t.call(call(1), 0.0)
    t.call(call(2), 0.0)  # no bytes: a was sent them with call 1
    out = t.receive(a.route, a.msg("CALL_RESULT", call=2, part=0, parts=1, data=None, failure=None,
                                   missing=[buffer_id(BIG)]), 0.1)
    assert sends(out) == [(a.session, "CALL")] and len(out[0].payload) == 3
    for _ in range(3):  # evicted again and again: the worker's cache is too small
        out = t.receive(a.route, a.msg("CALL_RESULT", call=2, part=0, parts=1, data=None, failure=None,
                                       missing=[buffer_id(BIG)]), 0.2)
    (done,) = events(out)
    assert done.failure is not None and "buffer cache" in done.failure


def test_calls_of_a_lost_peer_run_elsewhere_and_fail_after_max_attempts():
    t = table()
    sims = [Sim(f"w{i}") for i in range(MAX_CALL_ATTEMPTS + 1)]
    sims[0].join(t, 0.0, slots=1)
    t.call(call(1), 0.0)
    for i, sim in enumerate(sims[1:], start=1):
        out = t.lose(sims[i - 1].session, "killed")
        if i < MAX_CALL_ATTEMPTS:
            assert events(out) == []
            out = sim.join(t, 1.0, slots=1)  # the call waits for a peer, then goes to it
            assert sends(out)[-1] == (sim.session, "CALL")
            assert t.calls.running[1].session == sim.session
        else:
            (done,) = events(out)
            assert "lost with 3 workers" in done.failure


def test_calls_without_any_peer_fail_after_join_timeout_and_all_fail_on_goodbye():
    t = table(join_timeout=5.0)
    t.call(call(1), 0.0)
    assert events(t.tick(1.0)) == [] and events(t.tick(5.5)) == []
    (done,) = events(t.tick(7.0))
    assert "no worker" in done.failure
    a = Sim("a")
    a.join(t, 8.0, slots=1)
    t.call(call(2), 8.0)
    t.call(call(3), 8.0)
    t.call(call(4), 8.0)  # waiting: a has room for two
    done = [e for e in t.goodbye(9.0, exit=True, reason="bye") if isinstance(e, CallDone)]
    assert sorted(d.call.call_id for d in done) == [2, 3, 4] and all("closed" in d.failure for d in done)


def test_the_worker_buffer_cache_drops_the_least_recently_used():
    cache = BufferCache(max_bytes=10)
    assert cache.frames({"ids": ["a", "b"], "sent": ["a", "b"]}, [b"h", b"p", b"12345", b"6789"])[2:] == \
        [b"12345", b"6789"]
    cache.frames({"ids": ["c"], "sent": ["c"]}, [b"h", b"p", b"xyz"])  # 12 bytes: "a" goes
    assert cache.frames({"ids": ["a", "b", "c"], "sent": []}, [b"h", b"p"]) == ["a"]


# --------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def pool():
    with LocalProcesses(2) as pool:
        yield pool


def same_cv_results(a, b):
    for key in (k for k in b.cv_results_ if "time" not in k):
        if np.asarray(b.cv_results_[key]).dtype.kind == "f":
            np.testing.assert_array_equal(a.cv_results_[key], b.cv_results_[key], err_msg=key)
        else:
            assert list(a.cv_results_[key]) == list(b.cv_results_[key]), key


def test_grid_search_cv_on_local_processes_equals_its_loky_run(pool):
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    sent = pool.stats["calls_sent"]
    with joblib.parallel_config(backend="hpsearch", workers=pool):
        ours = GridSearchCV(LogisticRegression(), grid, n_jobs=-1).fit(X, Y)
    with joblib.parallel_config(backend="loky"):
        loky = GridSearchCV(LogisticRegression(), grid, n_jobs=2).fit(X, Y)
    same_cv_results(ours, loky)
    assert ours.best_params_ == loky.best_params_
    assert pool.stats["calls_sent"] > sent


def test_x_travels_once_per_worker_process_across_three_cross_val_score_calls(pool):
    X2 = X + 1.0  # data no other test sent
    x_id = buffer_id(X2)
    sent, calls = pool.stats["call_buffer_bytes_sent"], pool.stats["calls_done"]
    with joblib.parallel_config(backend="hpsearch", workers=pool):
        scores = [cross_val_score(LogisticRegression(C=c), X2, Y, n_jobs=-1) for c in (0.1, 1.0, 10.0)]
    expected = [cross_val_score(LogisticRegression(C=c), X2, Y) for c in (0.1, 1.0, 10.0)]
    np.testing.assert_array_equal(scores, expected)
    holders = [s for s, held in pool._table.calls.held.items() if x_id in held]
    assert len(holders) == 2  # both processes ran folds...
    assert pool.stats["calls_done"] - calls >= 3  # ...of several calls, and X's bytes went
    assert pool.stats["call_buffer_bytes_sent"] - sent == 2 * X2.nbytes  # once to each


def test_cross_validate_forest_and_permutation_importance_on_local_processes(pool):
    check_sklearn_parallel_calls(pool)


def test_a_result_larger_than_a_worker_message_comes_back_whole(pool):
    value = pool.submit_call(functools.partial(np.arange, 1_000_000)).result(timeout=60)  # 8 MB: 16 parts
    np.testing.assert_array_equal(value, np.arange(1_000_000))


def test_an_error_in_a_batch_reaches_the_caller(pool):
    with joblib.parallel_config(backend="hpsearch", workers=pool):
        with pytest.raises(ZeroDivisionError):
            joblib.Parallel(n_jobs=-1)(joblib.delayed(divmod)(1, i) for i in (1, 0, 2))


def test_a_call_whose_process_is_killed_runs_on_another(pool, tmp_path):
    marker = tmp_path / "pids"
    future = pool.submit_call(functools.partial(pid_then_sleep, str(marker), 1.0, "done"))
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    first = int(marker.read_text().split()[0])
    os.kill(first, signal.SIGKILL)
    pid, value = future.result(timeout=60)
    assert value == "done" and pid != first
    assert [int(p) for p in marker.read_text().split()][0] == first


def test_a_remote_worker_runs_the_backend_only_when_trusted(spawn_worker):
    token = make_token()
    with RemoteWorkers("tcp://127.0.0.1:*", token=token) as untrusted:
        with pytest.raises(InvalidParameterError, match="trust_workers=True"):
            with joblib.parallel_config(backend="hpsearch", workers=untrusted):
                joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(i) for i in range(2))
    with RemoteWorkers("tcp://127.0.0.1:*", token=token, trust_workers=True, join_timeout=60) as remote:
        spawn_worker(remote.endpoint, remote.token, "--slots", "2")
        with joblib.parallel_config(backend="hpsearch", workers=remote):
            scores = cross_val_score(LogisticRegression(), X, Y, n_jobs=-1)
        np.testing.assert_array_equal(scores, cross_val_score(LogisticRegression(), X, Y))
        assert remote.stats["calls_done"] >= 3 and remote.stats["call_buffer_bytes_sent"] == X.nbytes


def test_bad_call_frames_fail_the_call_not_the_worker():
    cache = BufferCache()
    with pytest.raises(Exception, match="one payload frame per sent buffer"):
        cache.frames({"ids": ["a"], "sent": ["a"]}, [b"h", b"p"])


# ------------------------------------------------- workers= read as run_search reads it


def active_runner():
    backend, _ = joblib.parallel.get_active_backend()
    return backend._runner


def test_an_int_moves_gil_bound_batches_to_the_warm_processes():
    """workers=2 as run_search(workers=2): threads first; batches that take turns on the
    GIL move to the 2 warm processes (running already: the move is due at once)."""
    warm = warm_processes(2)
    warm.open().total_slots()
    warm.stop()  # given back, still running
    assert warm_pool_ready(2)
    verdicts = []
    with joblib.parallel_config(backend="hpsearch", workers=2):
        # Each Parallel call is measured anew; other programs busy on the cores (a pool
        # from an earlier test still winding down) give a "loaded" verdict that rightly
        # stays on threads, so a GIL-bound call gets three tries to be judged on a quiet moment.
        for _ in range(3):
            pids = joblib.Parallel(n_jobs=-1, batch_size=1)(joblib.delayed(spin_pid)(0.02) for _ in range(80))
            runner = active_runner()
            assert isinstance(runner, _AutoRunner)
            if runner.moved:
                break
            verdicts.append(runner.last_verdict)
    assert runner.moved, f"never moved; the probe's verdicts: {verdicts}"
    assert os.getpid() in pids  # the first batches, measured on threads
    assert set(pids) - {os.getpid()}  # the later ones on the processes
    assert warm_pool_ready(2)  # given back for later searches


def test_threads_stay_threads_and_warm_processes_are_processes():
    with joblib.parallel_config(backend="hpsearch", workers=ThreadWorkers(2)):
        pids = joblib.Parallel(n_jobs=-1, batch_size=1)(joblib.delayed(spin_pid)(0.02) for _ in range(40))
    assert set(pids) == {os.getpid()}
    with joblib.parallel_config(backend="hpsearch", workers=warm_processes(2)):
        pids = joblib.Parallel(n_jobs=-1)(joblib.delayed(spin_pid)(0.001) for _ in range(8))
    assert os.getpid() not in pids


def test_auto_workers_and_no_workers_read_as_run_search_reads_them():
    with joblib.parallel_config(backend="hpsearch", workers=AutoWorkers(2, start_seconds=60.0)):
        assert joblib.Parallel(n_jobs=-1)(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
        assert isinstance(active_runner(), _AutoRunner) and active_runner().start_seconds == 60.0
    with joblib.parallel_config(backend="hpsearch"):  # no workers: n_jobs local workers
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
        runner = active_runner()
        assert isinstance(runner, _AutoRunner) and runner.n == 2


@pytest.mark.parametrize("workers, match", [
    (0, "workers must be >= 1"),
    ([LocalProcesses(1), 2], "a list of pools serves searches only"),
])
def test_workers_a_search_takes_but_joblib_cannot(workers, match):
    with pytest.raises(InvalidParameterError, match=match):
        with joblib.parallel_config(backend="hpsearch", workers=workers):
            joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(i) for i in range(2))
