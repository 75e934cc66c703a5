"""Search strategies: grid, random and Bayesian, all behind ``ask``/``tell``.

``BayesStrategy`` is imported on first use: it needs scikit-optimize, whose import
takes a while and which ``import hpsearch`` should not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Candidate, Strategy
from .grid import GridStrategy
from .random import RandomStrategy

if TYPE_CHECKING:
    from .bayes import BayesStrategy

__all__ = ["Candidate", "Strategy", "GridStrategy", "RandomStrategy", "BayesStrategy"]


def __getattr__(name: str) -> Any:
    if name == "BayesStrategy":
        from .bayes import BayesStrategy

        return BayesStrategy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
