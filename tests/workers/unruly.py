"""Estimators that misbehave: hang, abort their process, or slow down on one worker.

Worker processes import this module by name (pickles refer to its classes), so it
holds no test code and has no side effects on import.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

#: Hung fits in this process wait on this event: a test sets it when it is done, so
#: no thread it left behind outlives it. In a worker process nobody sets it.
RELEASE = threading.Event()


class _Scored(BaseEstimator):
    def score(self, X: Any, y: Any = None) -> float:
        return float(-((self.c - 3.0) ** 2) + np.mean(X[:, 0]))  # type: ignore[attr-defined]


class HangEstimator(_Scored):
    """The fit of candidate ``hang_c`` never returns (until ``RELEASE`` is set)."""

    def __init__(self, c: float = 0.0, hang_c: float | None = None, started: str = "") -> None:
        self.c = c
        self.hang_c = hang_c
        self.started = started

    def fit(self, X: Any, y: Any = None) -> HangEstimator:
        if self.c == self.hang_c:
            if self.started:
                open(self.started, "a").close()
            RELEASE.wait(3600)
        return self


class AbortEstimator(_Scored):
    """The fit of candidate ``abort_c`` kills its process with ``os.abort()`` (SIGABRT)."""

    def __init__(self, c: float = 0.0, abort_c: float | None = None, delay: float = 0.0) -> None:
        self.c = c
        self.abort_c = abort_c
        self.delay = delay

    def fit(self, X: Any, y: Any = None) -> AbortEstimator:
        if self.c == self.abort_c:
            os.abort()
        if self.delay:
            time.sleep(self.delay)
        return self


class SlowdownEstimator(_Scored):
    """Each fit sleeps ``delay`` seconds, 50 times longer in a process for which a file
    named after its pid exists in ``slow_dir`` (a worker that slows down mid-search)."""

    def __init__(self, c: float = 0.0, delay: float = 0.0, slow_dir: str = "") -> None:
        self.c = c
        self.delay = delay
        self.slow_dir = slow_dir

    def fit(self, X: Any, y: Any = None) -> SlowdownEstimator:
        slow = bool(self.slow_dir) and os.path.exists(os.path.join(self.slow_dir, str(os.getpid())))
        time.sleep(self.delay * (50 if slow else 1))
        return self
