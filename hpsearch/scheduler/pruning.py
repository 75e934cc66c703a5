"""Folds dropped early: when may a candidate's remaining folds be skipped?

The rule (:class:`PairedPruner`) is a paired comparison on the same CV folds. Let
``B`` be the best candidate completed so far (highest mean score among those with
the same resource), and ``C`` a candidate with ``k`` folds completed. On each fold
``i`` both were scored on the same train/test split, so the differences
``d_i = score_C,i - score_B,i`` remove the fold-to-fold variation that both share.
``C`` is pruned when ``k >= min_folds`` and the one-sided upper confidence bound of
the mean difference is below zero::

    mean(d) + t(confidence, k - 1) * std(d, ddof=1) / sqrt(k) < 0

that is, a paired t-test says, at the given confidence, that ``C`` is worse than
``B`` on average over folds, so ``C`` cannot be expected to reach ``B``'s mean
score with its remaining folds. A fold on which ``C``'s fit failed (a nan score)
prunes it at once: its mean is nan whatever the other folds give. The rule is pure:
the scheduler calls it each time a fold result or a new best arrives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedPruner"]


@dataclass(frozen=True)
class PairedPruner:
    """Prune a candidate whose completed folds show it is worse than the best.

    Parameters
    ----------
    min_folds : int
        Folds a candidate completes before it may be pruned (at least 2, for a
        variance estimate).
    confidence : float
        One-sided confidence of the paired t-test, in (0.5, 1).

    Examples
    --------
    >>> pruner = PairedPruner()
    >>> best = [0.90, 0.92, 0.91, 0.93, 0.90]
    >>> pruner.should_prune([0.70, 0.71, None, None, None], best)
    True
    >>> pruner.should_prune([0.91, 0.90, None, None, None], best)
    False
    """

    min_folds: int = 2
    confidence: float = 0.95

    def __post_init__(self) -> None:
        from ..errors import InvalidParameterError

        if isinstance(self.min_folds, bool) or not isinstance(self.min_folds, int) or self.min_folds < 2:
            raise InvalidParameterError(f"min_folds must be an integer >= 2, got {self.min_folds!r}")
        if not 0.5 < self.confidence < 1:
            raise InvalidParameterError(f"confidence must be in (0.5, 1), got {self.confidence!r}")

    def should_prune(self, scores: Sequence[float | None], best: Sequence[float]) -> bool:
        """Whether a candidate with fold ``scores`` (None: not done yet) cannot reach ``best``."""
        pairs = [(s, b) for s, b in zip(scores, best) if s is not None]
        if any(math.isnan(s) for s, _ in pairs):
            return True
        pairs = [(s, b) for s, b in pairs if not math.isnan(b)]
        k = len(pairs)
        if k < self.min_folds or k == len(best):
            return False
        diffs = [s - b for s, b in pairs]
        mean = sum(diffs) / k
        std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (k - 1))
        return bool(mean + _t_quantile(self.confidence, k - 1) * std / math.sqrt(k) < 0)


@functools.lru_cache(maxsize=256)
def _t_quantile(confidence: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(confidence, df))
