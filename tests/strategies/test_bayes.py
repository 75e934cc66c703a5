"""BayesStrategy beyond the conformance suite: the scikit-optimize translation layer."""

from __future__ import annotations

import math
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from scipy.stats import loguniform, norm, randint, uniform

from hpsearch import Categorical, Integer, Real
from hpsearch.errors import InvalidParameterError, SearchSpaceError
from hpsearch.strategies import BayesStrategy, RandomStrategy
from hpsearch.strategies.bayes import DEFAULT_BATCH_SIZE

from .conftest import drive
from .objectives import BRANIN_SPACE, HARTMANN6_SPACE, neg_branin, neg_hartmann6


def small(space, n_iter=5, **kwargs):
    kwargs = {"random_state": 0, "n_initial_points": 2, "batch_size": 2, "acq_func": "EI", **kwargs}
    return BayesStrategy(space, n_iter, **kwargs)


def test_pinned_versions_are_the_installed_ones():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    for spec in pyproject["project"]["dependencies"]:
        req = Requirement(spec)
        if req.name in ("scikit-optimize", "scikit-learn", "numpy", "scipy"):
            assert req.specifier.contains(version(req.name)), (req, version(req.name))


@pytest.mark.parametrize("surrogate", ["GP", "RF", "ET"])
def test_each_offered_surrogate_works(surrogate):
    s = small({"x": Real(-2.0, 2.0), "k": ["a", "b"]}, surrogate=surrogate)
    results = drive(s, lambda p: -(p["x"] - 1) ** 2, workers=2)
    assert len(results) == 5


@pytest.mark.parametrize("acq_func", ["gp_hedge", "LCB", "PI"])
def test_each_offered_acquisition_works(acq_func):
    assert len(drive(small({"x": Real(-2.0, 2.0)}, acq_func=acq_func), lambda p: -p["x"] ** 2)) == 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"surrogate": "GBRT"}, "numpy 2.4"),
        ({"surrogate": "dummy"}, "surrogate"),
        ({"acq_func": "MES"}, "acq_func"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_initial_points": 0}, "n_initial_points"),
        ({"asynchronous": "yes"}, "asynchronous"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        BayesStrategy({"x": Real(0.0, 1.0)}, 5, **kwargs)


def test_scipy_uniform_and_loguniform_become_reals():
    s = small({"u": uniform(2, 3), "l": loguniform(1e-3, 1e2)})
    for cand, _ in drive(s, lambda p: -abs(math.log10(p["l"]))):
        assert 2.0 <= cand.params["u"] <= 5.0 and 1e-3 <= cand.params["l"] <= 1e2


@pytest.mark.parametrize("dist", [norm(), randint(1, 5)])
def test_other_distributions_are_refused(dist):
    with pytest.raises(SearchSpaceError, match="Bayesian search cannot use parameter 'p'"):
        BayesStrategy({"p": dist}, 5)


def test_synchronous_batches():
    s = BayesStrategy({"x": Real(0.0, 1.0)}, 12, random_state=0, acq_func="EI")
    assert s.batch_size == DEFAULT_BATCH_SIZE == 5
    first = s.ask(3) + s.ask(10)
    assert [c.id for c in first] == [0, 1, 2, 3, 4]
    for c in first[:-1]:
        s.tell(c.id, c.params["x"])
        assert s.ask(5) == []  # the batch awaits its last score
    s.tell(first[-1].id, first[-1].params["x"])
    assert [c.id for c in s.ask(10)] == [5, 6, 7, 8, 9]


def test_asynchronous_gives_distinct_points_while_others_run():
    s = small({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)}, n_iter=9, asynchronous=True)
    first = s.ask(2)
    for c in first:
        s.tell(c.id, -c.params["x"])
    running = [c for _ in range(4) for c in s.ask(1)]  # four in flight, none told
    points = [tuple(c.params.values()) for c in running]
    assert len(running) == 4 and len(set(points)) == 4


def test_nan_is_told_as_the_worst_finite_score():
    s = small({"x": Real(0.0, 1.0)}, n_iter=6)
    batch = s.ask(2)
    s.tell(batch[0].id, math.nan)
    s.tell(batch[1].id, math.nan)
    optimizer = s._subs[0].optimizer
    assert optimizer.yi == []  # held back: nothing finite to compare with yet
    batch = s.ask(2)
    s.tell(batch[0].id, 0.5)
    s.tell(batch[1].id, -math.inf)
    assert sorted(optimizer.yi) == [-0.5, -0.5, -0.5, -0.5]  # skopt minimises -score
    assert all(math.isfinite(v) for v in optimizer.yi)
    drive(s, lambda p: 1.0)
    assert s.finished


def test_odd_categorical_choices_come_back_as_themselves():
    marker = object()
    choices = [None, (1, 2), marker]
    s = small({"c": Categorical(choices), "n": Integer(1, 2)}, n_iter=6)
    for cand, _ in drive(s, lambda p: float(p["n"])):
        assert any(cand.params["c"] is c for c in choices)
        assert type(cand.params["n"]) is int


def test_small_discrete_space_caps_n_iter():
    with pytest.warns(UserWarning, match="only 4 points"):
        s = small({"a": [1, 2], "b": [True, False]}, n_iter=10)
    assert s.total == 4
    assert len({tuple(c.params.items()) for c, _ in drive(s, lambda p: 0.0)}) == 4


def test_sub_spaces_split_n_iter_in_turn():
    s = small([{"a": Real(0.0, 1.0)}, {"b": Real(0.0, 1.0)}], n_iter=5)
    names = [next(iter(c.params)) for c, _ in drive(s, lambda p: 0.0)]
    assert names == ["a", "b", "a", "b", "a"]


def best_after(strategy, objective) -> float:
    return max(score for _, score in drive(strategy, objective, workers=5))


@pytest.mark.slow
@pytest.mark.parametrize(
    "space, objective, margin",
    [(BRANIN_SPACE, neg_branin, 1.0), (HARTMANN6_SPACE, neg_hartmann6, 0.15)],
    ids=["branin", "hartmann6"],
)
def test_bayes_beats_random_on_synthetic_objectives(space, objective, margin):
    """Mean best value after 30 evaluations over 5 seeds (scores are negated minima)."""
    bayes = np.mean([best_after(BayesStrategy(space, 30, random_state=s, acq_func="EI"), objective) for s in range(5)])
    rand = np.mean([best_after(RandomStrategy(space, 30, random_state=s), objective) for s in range(5)])
    assert bayes > rand + margin, (bayes, rand)
