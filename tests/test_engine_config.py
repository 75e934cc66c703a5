"""A task runs under the search's scikit-learn configuration, and whatever its fit
sets is undone after it, whether or not the thread already had that configuration."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
from sklearn import config_context, get_config, set_config
from sklearn.base import BaseEstimator
from sklearn.metrics import check_scoring

from hpsearch._engine import TaskContext


class ConfigSeen(BaseEstimator):
    """Records the configuration its fit runs under, then changes it."""

    seen: list[dict] = []

    def __init__(self, c: int = 0) -> None:
        self.c = c

    def fit(self, X, y=None):
        ConfigSeen.seen.append(get_config())
        set_config(working_memory=7, assume_finite=not get_config()["assume_finite"])
        return self

    def score(self, X, y=None):
        return 1.0


def context(config: dict, master_pid: int) -> TaskContext:
    X = np.zeros((20, 2))
    splits = [(np.arange(5, 20), np.arange(5))]
    return TaskContext(
        estimator=ConfigSeen(), X=X, y=None, splits=splits, scorers={"score": None}, fit_params={},
        score_params={}, error_score=np.nan, return_train_score=False, scorer=check_scoring(ConfigSeen()),
        config=config, warning_filters=list(warnings.filters), master_pid=master_pid,
    )


def run_in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return out[0]


def test_fit_sees_the_search_config_and_its_changes_are_undone():
    with config_context(assume_finite=True):
        config = get_config()
    for master_pid in (os.getpid(), -1):  # threads in the master, and as in a worker process
        ctx = context(config, master_pid)

        def tasks():
            states = []
            for thread_config in (config, {**config, "assume_finite": False}, config, config):
                set_config(**thread_config)
                ConfigSeen.seen.clear()
                result = ctx.evaluate_task({"c": 1}, 0)
                assert result.error is None, result.error
                assert ConfigSeen.seen == [config]
                states.append(get_config() == thread_config)
            return states

        assert run_in_thread(tasks) == [True, True, True, True]
