"""Pools cannot deadlock or wait in silence: listed twice, shared by two searches, no worker."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from hpsearch import RemoteWorkers, ThreadWorkers, run_search
from hpsearch.errors import InvalidParameterError, NoWorkersError
from hpsearch.workers import remote

from .helpers import SleepEstimator, wait_for

X = np.random.default_rng(1).normal(size=(40, 3))


def test_a_pool_listed_twice_is_refused_before_any_fit():
    pool = ThreadWorkers(1)
    with pytest.raises(InvalidParameterError, match="lists the pool ThreadWorkers.1. twice"):
        run_search(SleepEstimator(), {"c": [1.0, 2.0]}, X, cv=2, workers=[pool, pool], progress=False)
    # Refused up front: the pool is free for the next search.
    result = run_search(SleepEstimator(), {"c": [1.0, 2.0]}, X, cv=2, workers=pool, progress=False)
    assert result.best_params_ == {"c": 2.0}


def test_a_second_search_on_a_busy_pool_is_refused_and_the_first_goes_on():
    pool = ThreadWorkers(1)
    first: list = []
    thread = threading.Thread(target=lambda: first.append(run_search(
        SleepEstimator(), {"c": [1.0, 2.0, 3.0], "delay": [0.2]}, X, cv=2, workers=pool, progress=False)))
    thread.start()
    try:
        from hpsearch.workers import usage

        wait_for(lambda: usage._busy, 30, "the first search to start")
        with pytest.raises(InvalidParameterError, match="serving another search right now"):
            run_search(SleepEstimator(), {"c": [4.0]}, X, cv=2, workers=pool, progress=False)
    finally:
        thread.join(60)
    assert first and first[0].best_params_ == {"c": 3.0, "delay": 0.2}


def test_a_remote_pool_waiting_for_workers_warns_with_the_join_command(monkeypatch, caplog):
    monkeypatch.setattr(remote, "WAITING_WARNING_AFTER", 0.2)
    monkeypatch.setattr(remote, "WAITING_WARNING_EVERY", 0.5)
    with RemoteWorkers("tcp://127.0.0.1:*", join_timeout=1.6) as pool:
        with caplog.at_level(logging.WARNING, logger="hpsearch.workers.remote"):
            with pytest.raises(NoWorkersError, match="only 0 of min_workers=1"):
                run_search(SleepEstimator(), {"c": [1.0]}, X, cv=2, workers=pool, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "waiting for workers" in r.getMessage()]
    assert len(warnings) >= 2  # at first, and again
    assert all(pool.join_command in w for w in warnings)
