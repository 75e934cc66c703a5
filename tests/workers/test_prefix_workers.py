"""Prefix reuse on worker processes: the same results as refitting from scratch."""

from __future__ import annotations

import functools

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from hpsearch import LocalProcesses, RemoteWorkers
from tests.test_prefix import (
    DOCS,
    NUMERIC_SPACE,
    X_NUM,
    Y_NUM,
    Y_TEXT,
    assert_same_results,
    numeric_pipeline,
    search,
    text_pipeline,
)

TEXT_SPACE = {"vect__ngram_range": [(1, 1), (1, 2)], "clf__C": [0.1, 10.0]}
CLASSIFIERS = {"LinearSVC": LinearSVC(random_state=0), "LogisticRegression": LogisticRegression()}


@functools.lru_cache(maxsize=None)
def refitted(kind: str):
    """The search refitting every candidate, on one thread."""
    if kind == "numeric":
        return search(numeric_pipeline(), NUMERIC_SPACE, X_NUM, Y_NUM, workers=1, prefix_cache=False)
    return search(text_pipeline(CLASSIFIERS[kind]), TEXT_SPACE, DOCS, Y_TEXT, workers=1, prefix_cache=False)


def check_pool(pool, text_kind: str) -> None:
    text = search(text_pipeline(CLASSIFIERS[text_kind]), TEXT_SPACE, DOCS, Y_TEXT, workers=pool)
    numeric = search(numeric_pipeline(), NUMERIC_SPACE, X_NUM, Y_NUM, workers=pool)
    assert_same_results(text, refitted(text_kind))
    assert_same_results(numeric, refitted("numeric"))


@pytest.mark.slow
def test_same_results_on_local_processes():
    with LocalProcesses(2) as pool:
        check_pool(pool, "LinearSVC")


@pytest.mark.slow
def test_same_results_on_remote_workers(spawn_worker):
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=2, join_timeout=60) as pool:
        for i in range(2):
            spawn_worker(pool.endpoint, pool.token, "--name", f"w{i}")
        check_pool(pool, "LogisticRegression")
