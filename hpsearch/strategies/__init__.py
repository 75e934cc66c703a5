"""Search strategies: grid, random and Bayesian, all behind ``ask``/``tell``."""

from .base import Candidate, Strategy
from .grid import GridStrategy
from .random import RandomStrategy

__all__ = ["Candidate", "Strategy", "GridStrategy", "RandomStrategy"]
