"""With ``random_state=None`` a strategy draws from a generator of its own: numpy's
global random state is neither read (two strategies differ) nor advanced."""

from __future__ import annotations

import numpy as np
import pytest

from hpsearch import Real
from hpsearch.strategies.bayes import BayesStrategy
from hpsearch.strategies.random import RandomStrategy

SPACE = {"x": Real(0.0, 1.0), "lr": Real(1e-4, 1.0, prior="log-uniform")}


def draw(make) -> list[dict]:
    strategy = make()
    candidates = []
    while len(candidates) < 6:
        batch = strategy.ask(6 - len(candidates))
        for cand in batch:
            strategy.tell(cand.id, -cand.params["x"])
        candidates += batch
    return [c.params for c in candidates]


@pytest.mark.parametrize("make", [
    lambda: RandomStrategy(SPACE, n_iter=6),
    lambda: BayesStrategy(SPACE, n_iter=6, n_initial_points=6),
], ids=["random", "bayes"])
def test_an_unseeded_strategy_leaves_numpys_global_state_alone(make):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    first = draw(make)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(0)
    assert draw(make) != first  # not seeded from the global state
