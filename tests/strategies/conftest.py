"""The fixture every strategy overrides to run the conformance suite.

A strategy joins the suite by adding a :class:`StrategyCase` to ``CASES``: how to
build it from ``(space_spec, n_iter, seed)`` and what it promises (whether it can
search continuous dimensions, whether its candidates are independent of the order
scores arrive in). No estimator and no scheduler are involved: :func:`drive` plays
the part of a pool of workers that finish in any order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from hpsearch.strategies import BayesStrategy, Candidate, GridStrategy, RandomStrategy


@dataclass(frozen=True)
class StrategyCase:
    name: str
    build: Callable[[Any, int, int], Any]
    continuous: bool = True  # can search Real dimensions
    order_independent: bool = True  # same seed -> same candidates, whatever the pool
    samples: bool = True  # honours n_iter (grid enumerates instead)

    def __call__(self, space: Any, n_iter: int = 6, seed: int = 0) -> Any:
        return self.build(space, n_iter, seed)


# Bayes is kept small (3 random points, batches of 3) so that the surrogate is used
# in every loop while the suite stays fast.
CASES = [
    StrategyCase("grid", lambda space, n_iter, seed: GridStrategy(space), continuous=False, samples=False),
    StrategyCase("random", lambda space, n_iter, seed: RandomStrategy(space, n_iter, random_state=seed)),
    StrategyCase(
        "bayes",
        lambda space, n_iter, seed: BayesStrategy(
            space, n_iter, random_state=seed, n_initial_points=3, batch_size=3, acq_func="EI"
        ),
    ),
    StrategyCase(
        "bayes-async",
        lambda space, n_iter, seed: BayesStrategy(
            space, n_iter, random_state=seed, n_initial_points=3, acq_func="EI", asynchronous=True
        ),
        order_independent=False,
    ),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def make_strategy(request: pytest.FixtureRequest) -> StrategyCase:
    """``make_strategy(space_spec, n_iter, seed)`` builds the strategy under test."""
    return request.param


def drive(
    strategy: Any,
    objective: Callable[[dict], float],
    workers: int = 3,
    order_seed: int | None = None,
    max_steps: int = 10_000,
) -> list[tuple[Candidate, float]]:
    """Run ask/tell to the end like a pool of ``workers``; return candidates with scores.

    Results come back oldest first, or in a random order when ``order_seed`` is set.
    Fails if the strategy stalls (asks nothing while nothing is pending).
    """
    rng = np.random.RandomState(order_seed) if order_seed is not None else None
    pending: list[Candidate] = []
    done: list[tuple[Candidate, float]] = []
    for _ in range(max_steps):
        if not strategy.finished and len(pending) < workers:
            new = strategy.ask(workers - len(pending))
            assert len(new) <= workers - len(pending)
            pending.extend(new)
        if not pending:
            assert strategy.finished, "the strategy proposed nothing while nothing is pending"
            break
        index = 0 if rng is None else int(rng.randint(len(pending)))
        cand = pending.pop(index)
        score = objective(cand.params)
        strategy.tell(cand.id, score)
        done.append((cand, score))
    else:  # pragma: no cover
        raise AssertionError("the strategy did not finish")
    return sorted(done, key=lambda cs: cs[0].id)
