"""The Strategy interface: which candidates to try, and nothing else.

A strategy is a plain synchronous object. It proposes candidates with ``ask`` and
learns their scores with ``tell``; it never starts threads, sleeps, reads clocks or
does I/O, so it is tested alone on synthetic objectives. The scheduler decides
when to ask and evaluates what it gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .._validation import check_integer
from ..errors import InvalidParameterError

__all__ = ["Candidate", "Strategy", "check_n_iter"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One point of the search space proposed by a strategy.

    ``id`` numbers candidates 0, 1, 2, ... in the order the strategy proposed them;
    ``cv_results_`` lists candidates in that order.

    Adaptive strategies (successive halving, Hyperband) evaluate a configuration
    several times with more and more resource; each evaluation is a candidate of its
    own. ``resource`` is the amount it gets (None: a plain full evaluation), and
    candidates are only compared with others of the same ``resource``. When the resource
    is the number of samples, ``n_samples`` is the training-set size: the scheduler
    runs its folds on the context's subsampled splits of that size (None: whole folds).
    ``tags`` become extra ``cv_results_`` columns (e.g. ``iter``, ``n_resources``).
    """

    id: int
    params: dict[str, Any] = field(hash=False)
    resource: int | None = None
    n_samples: int | None = None
    tags: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@runtime_checkable
class Strategy(Protocol):
    """What the scheduler needs from a search strategy.

    ``ask(n)`` returns up to ``n`` new candidates, ``[]`` when it has none right now
    (it waits for scores). ``tell(candidate_id, score)`` reports a candidate's mean
    CV score, higher is better; ``nan`` means its fits failed. ``finished`` is True
    once nothing more will ever be asked. ``total`` is the number of candidates the
    strategy will propose in all, when known in advance (for progress), else None.

    Optionally, ``ask_idle(n)``: up to ``n`` candidates for worker slots that would
    otherwise sit idle, asked only after ``ask`` gave none (ASHA's promotions beyond
    its quota, :mod:`hpsearch.strategies.halving`; see the scheduler's idle asks).
    """

    def ask(self, n: int) -> list[Candidate]: ...

    def tell(self, candidate_id: int, score: float) -> None: ...

    @property
    def finished(self) -> bool: ...

    @property
    def total(self) -> int | None: ...


def check_n_iter(n_iter: Any) -> int:
    return check_integer("n_iter", n_iter, 1)


class ListStrategy:
    """A strategy whose candidates are fixed up front (grid, random).

    Scores do not change what comes next; ``tell`` only checks the id. Both take
    microseconds, so the scheduler calls them on the thread that handles results
    (``inline``), with no strategy thread to wake for each ask.
    """

    inline = True

    def __init__(self, params_list: list[dict[str, Any]]) -> None:
        self._params = params_list
        self._next = 0
        self.scores: dict[int, float] = {}

    def ask(self, n: int) -> list[Candidate]:
        if n < 0:
            raise InvalidParameterError(f"ask(n) needs n >= 0, got {n}")
        start, stop = self._next, min(self._next + n, len(self._params))
        self._next = stop
        return [Candidate(i, dict(self._params[i])) for i in range(start, stop)]

    def tell(self, candidate_id: int, score: float) -> None:
        if not 0 <= candidate_id < self._next:
            raise InvalidParameterError(f"tell: candidate {candidate_id} was never asked for")
        self.scores[candidate_id] = float(score)

    @property
    def finished(self) -> bool:
        return self._next >= len(self._params)

    @property
    def total(self) -> int:
        return len(self._params)
