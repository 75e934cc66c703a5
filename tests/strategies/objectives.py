"""Synthetic objectives for strategy tests and benchmarks (scores: higher is better)."""

from __future__ import annotations

import math

import numpy as np

from hpsearch import Real

__all__ = ["BRANIN_SPACE", "HARTMANN6_SPACE", "neg_branin", "neg_hartmann6", "BRANIN_MAX", "HARTMANN6_MAX"]

BRANIN_SPACE = {"x1": Real(-5.0, 10.0), "x2": Real(0.0, 15.0)}
#: The maximum of ``neg_branin`` (Branin's minimum, 0.397887, negated).
BRANIN_MAX = -0.397887

HARTMANN6_SPACE = {f"x{i}": Real(0.0, 1.0) for i in range(1, 7)}
#: The maximum of ``neg_hartmann6`` (Hartmann-6's minimum, -3.32237, negated).
HARTMANN6_MAX = 3.32237

_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def neg_branin(params: dict) -> float:
    x1, x2 = params["x1"], params["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return -((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10)


def neg_hartmann6(params: dict) -> float:
    x = np.array([params[f"x{i}"] for i in range(1, 7)])
    inner = np.sum(_H6_A * (x - _H6_P) ** 2, axis=1)
    return float(np.sum(_H6_ALPHA * np.exp(-inner)))
