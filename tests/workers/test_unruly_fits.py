"""Fits that hang, kill their process or slow down; workers killed at random; Ctrl-C.

Real threads and real ``hpsearch-worker`` processes: the search finishes, records
what went wrong as data, keeps every healthy result, and leaves a full pool.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import warnings

import numpy as np
import pytest

from hpsearch import LocalProcesses, run_search
from hpsearch.errors import FitFailedWarning

from .helpers import Recording, wait_for
from .unruly import RELEASE, AbortEstimator, HangEstimator, SlowdownEstimator

X = np.random.default_rng(3).normal(size=(60, 3))
SPACE = {"c": [float(c) for c in range(6)]}


@pytest.fixture(autouse=True)
def release_hung_fits():
    RELEASE.clear()
    yield
    RELEASE.set()  # the threads left behind by this test end now


def reference(space=SPACE, cv=2):
    return run_search(HangEstimator(), space, X, cv=cv, workers=1, refit=False, progress=False)


def check_one_failed(result, failed_c, text, space=SPACE, cv=2):
    ref = reference(space, cv)
    scores = result.cv_results_["mean_test_score"]
    params = [p["c"] for p in result.cv_results_["params"]]
    assert params == space["c"]
    for i, c in enumerate(params):
        if c == failed_c:
            assert np.isnan(scores[i])
        else:
            assert scores[i] == ref.cv_results_["mean_test_score"][i], c
    assert result.fit_failures_ and all(text in e for e in result.fit_failures_)


def test_a_fit_past_fit_timeout_fails_as_data_on_threads():
    with pytest.warns(FitFailedWarning, match="fit_timeout=2"):
        result = run_search(HangEstimator(hang_c=2.0), SPACE, X, cv=2, workers=2, fit_timeout=2,
                            progress=False)
    check_one_failed(result, 2.0, "FitTimeoutError: the fit of candidate 2")
    assert result.best_params_ == {"c": 3.0}


def test_fit_timeout_is_checked_before_any_work():
    from hpsearch.errors import InvalidParameterError

    for bad in (0, -1.0, "2", True):
        with pytest.raises(InvalidParameterError, match="fit_timeout must be"):
            run_search(HangEstimator(), SPACE, X, fit_timeout=bad, progress=False)
    with pytest.raises(InvalidParameterError, match="max_task_deaths must be"):
        run_search(HangEstimator(), SPACE, X, max_task_deaths=0, progress=False)


def interrupt_after(path: str) -> list[float]:
    """Press Ctrl-C (SIGINT to this process) once the file ``path`` exists; the time."""
    pressed: list[float] = []

    def press() -> None:
        wait_for(lambda: os.path.exists(path), 120, "the hung fit to start")
        time.sleep(0.3)
        pressed.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press, daemon=True).start()
    return pressed


def test_ctrl_c_during_a_fit_that_never_returns_on_threads(tmp_path):
    started = str(tmp_path / "started")
    pressed = interrupt_after(started)
    with pytest.raises(KeyboardInterrupt):
        run_search(HangEstimator(hang_c=0.0, started=started), SPACE, X, cv=2, workers=2, progress=False)
    waited = time.monotonic() - pressed[0]
    assert waited < 5, f"Ctrl-C took {waited:.1f} s to give control back"


@pytest.fixture(scope="module")
def pool():
    with LocalProcesses(2, heartbeat_timeout=10) as pool:
        yield pool


def full(pool) -> None:
    wait_for(lambda: pool.n_workers == 2 and all(p.poll() is None for p in pool.processes), 60,
             "two live workers")
    assert len(pool.processes) == 2


@pytest.mark.slow
def test_a_fit_past_fit_timeout_stops_and_replaces_its_process(pool):
    restarts = pool.stats["restarts"]
    with pytest.warns(FitFailedWarning):
        result = run_search(HangEstimator(hang_c=2.0), SPACE, X, cv=2, workers=pool, fit_timeout=2,
                            progress=False)
    check_one_failed(result, 2.0, "ran past fit_timeout=2 s")
    full(pool)
    assert pool.stats["restarts"] > restarts


@pytest.mark.slow
def test_ctrl_c_during_a_fit_that_never_returns_on_processes(pool, tmp_path):
    started = str(tmp_path / "started")
    pressed = interrupt_after(started)
    restarts = pool.stats["restarts"]
    with pytest.raises(KeyboardInterrupt):
        run_search(HangEstimator(hang_c=0.0, started=started), SPACE, X, cv=2, workers=pool, progress=False)
    waited = time.monotonic() - pressed[0]
    assert waited < 5, f"Ctrl-C took {waited:.1f} s to give control back"
    # The process still running the hung fit is stopped and replaced.
    wait_for(lambda: pool.stats["restarts"] > restarts, 60, "the hung worker to be replaced")
    full(pool)


@pytest.mark.slow
def test_a_fit_that_aborts_its_process_fails_as_data_and_the_pool_stays_full(pool):
    space = {"c": [float(c) for c in range(8)]}
    with pytest.warns(FitFailedWarning):
        result = run_search(AbortEstimator(abort_c=3.0), space, X, cv=2, workers=pool, progress=False)
    check_one_failed(result, 3.0, "TaskFailedError", space=space)
    assert "lost 3 times" in result.fit_failures_[0]
    full(pool)


@pytest.mark.slow
def test_workers_killed_at_random_never_fail_a_healthy_candidate(pool):
    space = {"c": [float(c) for c in range(16)], "delay": [0.05]}
    ref = run_search(AbortEstimator(), {"c": space["c"]}, X, cv=3, workers=1, refit=False, progress=False)
    rng = random.Random(0)
    for _ in range(2):
        full(pool)
        recording = Recording(pool)
        kills: list[int] = []

        def killer() -> None:
            # Two SIGKILLs of random live workers while the search runs.
            for target in (4, 16):
                wait_for(lambda: len(recording.finished()) >= target, 120, "the search to run")
                victim = rng.choice([p for p in list(pool.processes) if p.poll() is None])
                os.kill(victim.pid, signal.SIGKILL)
                kills.append(victim.pid)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = run_search(AbortEstimator(), space, X, cv=3, workers=recording, refit=False, progress=False)
        thread.join(30)
        assert len(kills) == 2
        assert result.fit_failures_ == []
        np.testing.assert_array_equal(result.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])
    full(pool)


@pytest.mark.slow
def test_a_worker_that_slows_down_is_overtaken(pool, tmp_path):
    full(pool)
    space = {"c": [float(c) for c in range(12)], "delay": [0.1], "slow_dir": [str(tmp_path)]}
    recording = Recording(pool)
    victim = pool.processes[0].pid
    # Named now: the process may be stopped once the search ends (its copy lost).
    slow_name = next(p.name for p in list(pool._table.peers.values()) if p.pid == victim)

    def slow_down() -> None:
        wait_for(lambda: len(recording.finished()) >= 6, 120, "the search to run")
        (tmp_path / str(victim)).touch()  # its fits now take 50 times longer

    thread = threading.Thread(target=slow_down, daemon=True)
    thread.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitFailedWarning)  # nothing failed
        result = run_search(SlowdownEstimator(), space, X, cv=2, workers=recording, refit=False, progress=False)
    thread.join(10)
    ref = run_search(SlowdownEstimator(), {"c": space["c"]}, X, cv=2, workers=1, refit=False, progress=False)
    np.testing.assert_array_equal(result.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])
    # The slowed worker's last tasks ran again on the other one, which won.
    second = [e for e in recording.finished() if e.attempt >= 1]
    assert second and all(e.worker != slow_name for e in second)
