"""Estimators shared by the Dask tests.

Dask worker processes import this module by name (pickles refer to its classes), so it
holds no test code and has no side effects on import.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator


class GateEstimator(BaseEstimator):
    """A deterministic model whose fit waits until the file ``gate`` exists (at most 60 s).

    Tests hold tasks in their fits with it, change the cluster, then open the gate: what
    runs where is then fixed by the test, not by timing.
    """

    def __init__(self, c: float = 1.0, gate: str = "", free_below: float = float("-inf")) -> None:
        self.c = c
        self.gate = gate
        self.free_below = free_below  # fits with a smaller c do not wait

    def fit(self, X: Any, y: Any = None) -> GateEstimator:
        deadline = time.monotonic() + 60.0
        wait = self.gate and self.c >= self.free_below
        while wait and not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.offset_ = float(np.mean(X[:, 0]))
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return float(-((self.c - 3.0) ** 2) + self.offset_ - float(np.mean(X[:, 0])))


class MarkerEstimator(BaseEstimator):
    """Creates the file ``marker`` when fitted: proof that a fit ran."""

    def __init__(self, c: float = 1.0, marker: str = "") -> None:
        self.c = c
        self.marker = marker

    def fit(self, X: Any, y: Any = None) -> MarkerEstimator:
        with open(self.marker, "w"):
            pass
        return self

    def score(self, X: Any, y: Any = None) -> float:
        return self.c


def assert_same_results(a: Any, b: Any) -> None:
    """Every ``cv_results_`` entry equal (timings aside), and the same best candidate."""
    keys = [k for k in b.cv_results_ if "time" not in k]
    assert sorted(keys) == sorted(k for k in a.cv_results_ if "time" not in k)
    for key in keys:
        left, right = np.asarray(a.cv_results_[key]), np.asarray(b.cv_results_[key])
        if left.dtype.kind == "f":
            np.testing.assert_array_equal(left, right, err_msg=key)
        else:
            assert list(left) == list(right), key
    assert a.best_index_ == b.best_index_
