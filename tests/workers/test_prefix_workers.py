"""Prefix reuse on worker processes: the same results as refitting from scratch."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from hpsearch import LocalProcesses, RemoteWorkers
from tests.test_prefix import (
    DOCS,
    NUMERIC_SPACE,
    TEXT_SPACE,
    X_NUM,
    Y_NUM,
    Y_TEXT,
    assert_same_results,
    numeric_pipeline,
    search,
    text_pipeline,
)


@pytest.mark.slow
def test_same_results_on_local_processes():
    with LocalProcesses(2) as pool:
        text_on = search(text_pipeline(LinearSVC(random_state=0)), TEXT_SPACE, DOCS, Y_TEXT, workers=pool)
        num_on = search(numeric_pipeline(), NUMERIC_SPACE, X_NUM, Y_NUM, workers=pool)
    assert_same_results(text_on, search(text_pipeline(LinearSVC(random_state=0)), TEXT_SPACE, DOCS, Y_TEXT,
                                        workers=1, prefix_cache=False))
    assert_same_results(num_on, search(numeric_pipeline(), NUMERIC_SPACE, X_NUM, Y_NUM, workers=1, prefix_cache=False))


@pytest.mark.slow
def test_same_results_on_remote_workers(spawn_worker):
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=2, join_timeout=60) as pool:
        for i in range(2):
            spawn_worker(pool.endpoint, pool.token, "--name", f"w{i}")
        text_on = search(text_pipeline(LogisticRegression()), TEXT_SPACE, DOCS, Y_TEXT, workers=pool)
        num_on = search(numeric_pipeline(), NUMERIC_SPACE, X_NUM, Y_NUM, workers=pool)
    assert_same_results(text_on, search(text_pipeline(LogisticRegression()), TEXT_SPACE, DOCS, Y_TEXT,
                                        workers=1, prefix_cache=False))
    assert_same_results(num_on, search(numeric_pipeline(), NUMERIC_SPACE, X_NUM, Y_NUM, workers=1, prefix_cache=False))
