"""Data and estimators for the prefix-reuse tests.

Worker processes import this module by name (pickles refer to its classes), so it
holds no test code and has no side effects on import.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


def text_corpus(n_docs: int = 240, n_words: int = 40, vocabulary: int = 400, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Documents of two classes drawn from overlapping Zipf-like word distributions."""
    rng = np.random.RandomState(seed)
    words = np.array([f"w{i}" for i in range(vocabulary)])
    ranks = np.arange(1, vocabulary + 1, dtype=float)
    base = 1.0 / ranks
    y = rng.randint(0, 2, n_docs)
    docs = []
    for label in y:
        weights = base * (1.0 + 2.0 * (rng.permutation(vocabulary) < vocabulary // 10) * (label == 1))
        weights /= weights.sum()
        docs.append(" ".join(rng.choice(words, size=n_words, p=weights)))
    return docs, y


class CountingScaler(TransformerMixin, BaseEstimator):
    """Scales by a factor and counts, per process, how often it was fitted; a fit
    lasts at least ``delay`` seconds."""

    fits = 0
    _lock = threading.Lock()

    def __init__(self, factor: float = 1.0, delay: float = 0.0) -> None:
        self.factor = factor
        self.delay = delay

    def fit(self, X: Any, y: Any = None) -> CountingScaler:
        with CountingScaler._lock:
            CountingScaler.fits += 1
        if self.delay:
            time.sleep(self.delay)
        self.mean_ = np.asarray(X).mean(axis=0)
        return self

    def transform(self, X: Any) -> np.ndarray:
        return (np.asarray(X) - self.mean_) * self.factor


class FailingTransformer(TransformerMixin, BaseEstimator):
    """Fails to fit when ``fail`` is true, else passes the data through."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def fit(self, X: Any, y: Any = None) -> FailingTransformer:
        if self.fail:
            raise ValueError("this transformer was told to fail")
        return self

    def transform(self, X: Any) -> Any:
        return X


class InPlaceScaler(TransformerMixin, BaseEstimator):
    """A step that (wrongly) modifies its input in place."""

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def fit(self, X: Any, y: Any = None) -> InPlaceScaler:
        return self

    def transform(self, X: Any) -> Any:
        X *= self.factor
        return X


def first_step_name_scorer(estimator: Any, X: Any, y: Any) -> float:
    """A callable scorer that needs the whole fitted pipeline (not only its last step)."""
    return float(np.mean(estimator.predict(X) == y)) + 0.001 * len(estimator.steps)
