"""The contract every strategy keeps, run against each one through ``make_strategy``.

Add a strategy to ``CASES`` in ``conftest.py`` and it runs all of this.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpsearch import Categorical, Integer, Real, Space
from hpsearch.strategies import Candidate, Strategy

from .conftest import drive

# Enumerable, so that grid runs the same tests: 3 * 2 * 2 = 12 points.
DISCRETE = {"n": Integer(1, 3), "kind": ["rbf", "linear"], "extra": [None, (1, 2)]}
# Only lists: random search draws these without replacement (an Integer is sampled).
GRID_POINTS = {"n": [1, 2, 3], "kind": ["rbf", "linear"], "extra": [None, (1, 2)]}
MIXED = {
    "x": Real(-1.0, 1.0),
    "lr": Real(1e-4, 1.0, prior="log-uniform"),
    "n": Integer(1, 5),
    "kind": Categorical(["a", None, (1, 2)]),
}


def smooth(params: dict) -> float:
    """A synthetic score over every space used here."""
    score = -float(params.get("n", 0))
    if "x" in params:
        score -= (params["x"] - 0.3) ** 2 + math.log10(params["lr"]) ** 2
    if params.get("kind") in ("rbf", "a"):
        score += 1.0
    return score


def space_for(case) -> dict:
    return MIXED if case.continuous else DISCRETE


def test_is_a_strategy(make_strategy):
    strategy = make_strategy(DISCRETE, 4)
    assert isinstance(strategy, Strategy)
    assert strategy.total == (12 if not make_strategy.samples else 4)
    assert not strategy.finished


def test_ask_zero_changes_nothing(make_strategy):
    strategy = make_strategy(DISCRETE, 4)
    assert strategy.ask(0) == []
    first = strategy.ask(1)
    assert [c.id for c in first] == [0]


def test_ask_negative_is_refused(make_strategy):
    strategy = make_strategy(DISCRETE, 4)
    with pytest.raises(ValueError, match="n"):
        strategy.ask(-1)


def test_tell_unknown_candidate_is_refused(make_strategy):
    strategy = make_strategy(DISCRETE, 4)
    with pytest.raises(ValueError, match="never asked"):
        strategy.tell(0, 1.0)
    strategy.ask(1)
    with pytest.raises(ValueError, match="never asked"):
        strategy.tell(99, 1.0)


def test_ask_tell_contract_to_the_end(make_strategy):
    strategy = make_strategy(space_for(make_strategy), 7, seed=1)
    results = drive(strategy, smooth, workers=3)
    candidates = [c for c, _ in results]
    assert all(isinstance(c, Candidate) and isinstance(c.params, dict) for c in candidates)
    assert [c.id for c in candidates] == list(range(strategy.total))
    assert strategy.total == (12 if not make_strategy.samples else 7)
    assert strategy.finished
    assert strategy.ask(5) == []
    assert strategy.finished


def test_asking_more_than_remains(make_strategy):
    strategy = make_strategy(DISCRETE, 5)
    seen: list[Candidate] = []
    while not strategy.finished:
        batch = strategy.ask(10**6)
        assert len(batch) <= strategy.total - len(seen)
        for cand in batch:
            strategy.tell(cand.id, smooth(cand.params))
        seen += batch
    assert len(seen) == strategy.total
    assert strategy.ask(10**6) == []


def test_candidates_lie_in_the_space_with_plain_types(make_strategy):
    spec = space_for(make_strategy)
    space = Space.from_spec(spec)
    strategy = make_strategy(spec, 8, seed=2)
    for cand, _ in drive(strategy, smooth, workers=2):
        params = cand.params
        assert params in space
        assert set(params) == set(spec)
        assert type(params["n"]) is int  # ints stay ints, not numpy scalars nor floats
        if "x" in spec:
            assert type(params["x"]) is float and -1.0 <= params["x"] <= 1.0
            assert type(params["lr"]) is float and 1e-4 <= params["lr"] <= 1.0
            choices = spec["kind"].choices
        else:
            choices = spec["kind"]
            assert any(params["extra"] is c or params["extra"] == c for c in spec["extra"])
        assert any(params["kind"] is c or params["kind"] == c for c in choices)


def test_same_seed_same_candidates(make_strategy):
    spec = space_for(make_strategy)
    first = drive(make_strategy(spec, 7, seed=3), smooth, workers=2)
    again = drive(make_strategy(spec, 7, seed=3), smooth, workers=2)
    assert [c.params for c, _ in first] == [c.params for c, _ in again]


def test_same_candidates_whatever_the_pool_and_result_order(make_strategy):
    if not make_strategy.order_independent:
        pytest.skip(f"{make_strategy.name} trades reproducibility across pools for throughput")
    spec = space_for(make_strategy)
    one = drive(make_strategy(spec, 7, seed=4), smooth, workers=1)
    many = drive(make_strategy(spec, 7, seed=4), smooth, workers=4, order_seed=0)
    assert [c.params for c, _ in one] == [c.params for c, _ in many]


def test_no_point_is_proposed_twice_in_a_discrete_space(make_strategy):
    strategy = make_strategy(GRID_POINTS, 9, seed=5)
    points = [tuple(sorted(c.params.items(), key=lambda kv: kv[0])) for c, _ in drive(strategy, smooth)]
    assert len(points) == len(set(points)) == strategy.total


def test_nan_scores_are_tolerated(make_strategy):
    spec = space_for(make_strategy)

    def flaky(params: dict) -> float:
        flaky.calls += 1
        return math.nan if flaky.calls <= 4 or flaky.calls % 2 else smooth(params)

    flaky.calls = 0
    results = drive(make_strategy(spec, 8, seed=6), flaky, workers=2)
    assert len(results) == (12 if not make_strategy.samples else 8)
    assert any(math.isnan(s) for _, s in results)


def test_every_score_nan_still_finishes(make_strategy):
    results = drive(make_strategy(space_for(make_strategy), 6, seed=7), lambda p: math.nan)
    assert len(results) == (12 if not make_strategy.samples else 6)


def test_sub_spaces(make_strategy):
    spec = [{"kind": ["linear"], "n": [1, 2, 3, 4]}, {"kind": ["rbf"], "gamma": [0.1, 1.0, 10.0]}]
    space = Space.from_spec(spec)
    results = drive(make_strategy(spec, 6, seed=8), lambda p: -p.get("n", 0) + p.get("gamma", 0))
    kinds = {c.params["kind"] for c, _ in results}
    assert kinds == {"linear", "rbf"}
    assert all(c.params in space for c, _ in results)
    points = [tuple(sorted(c.params.items())) for c, _ in results]
    assert len(points) == len(set(points))


def test_a_seed_can_be_a_generator_or_none(make_strategy):
    if not make_strategy.samples:
        pytest.skip("grid takes no seed")
    for seed in (np.random.RandomState(0), None):
        strategy = make_strategy.build(DISCRETE, 3, seed)
        assert len(drive(strategy, smooth)) == 3
