"""The search-space vocabulary: dimensions, normalisation, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import loguniform, norm, uniform

from hpsearch import Categorical, Integer, Real, Space
from hpsearch.errors import SearchSpaceError
from hpsearch.space import Distribution
from hpsearch.strategies import GridStrategy, RandomStrategy


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Real(1.0, 1.0), "low must be smaller than high"),
        (lambda: Real(2.0, 1.0), "low must be smaller than high"),
        (lambda: Real(0.0, 1.0, prior="log-uniform"), "log-uniform prior needs low > 0"),
        (lambda: Real(-1.0, 1.0, prior="log"), "unknown prior 'log'"),
        (lambda: Real(0.0, math.inf), "finite number"),
        (lambda: Integer(3, 3), "low must be smaller than high"),
        (lambda: Integer(0, 5, prior="log-uniform"), "log-uniform prior needs low > 0"),
        (lambda: Integer(1.5, 3), "must be an integer"),
        (lambda: Categorical([]), "must not be empty"),
        (lambda: Categorical("abc"), "list of values"),
        (lambda: Space.from_spec({"C": []}), "empty"),
        (lambda: Space.from_spec({"C": "rbf"}), "string"),
        (lambda: Space.from_spec({"C": 3}), "not a search dimension"),
        (lambda: Space.from_spec([]), "empty list"),
    ],
)
def test_degenerate_specs_are_refused_clearly(make, match):
    with pytest.raises(SearchSpaceError, match=match):
        make()


def test_mixed_spec_normalises():
    space = Space.from_spec({"C": Real(0.1, 10), "k": ["a", "b"], "n": Integer(1, 3), "g": uniform(0, 1)})
    sub = space.subspaces[0]
    assert list(sub) == ["C", "g", "k", "n"]
    assert isinstance(sub["k"], Categorical) and isinstance(sub["g"], Distribution)
    assert Space.from_spec(space) is space


def test_grid_refuses_a_real_with_a_hint():
    with pytest.raises(SearchSpaceError, match="list of values instead, or use strategy='random' or 'bayes'"):
        GridStrategy({"C": Real(0.1, 10.0)})


def test_grid_enumerates_integers_and_categoricals():
    params = [c.params for c in GridStrategy({"n": Integer(1, 2), "k": Categorical(["a", None])}).ask(10)]
    assert params == [{"k": "a", "n": 1}, {"k": "a", "n": 2}, {"k": None, "n": 1}, {"k": None, "n": 2}]
    assert all(type(p["n"]) is int for p in params)


def test_random_samples_log_uniform_reals_log_uniformly():
    s = RandomStrategy({"C": Real(1e-3, 1e3, prior="log-uniform")}, 2000, random_state=0)
    logs = np.log10([c.params["C"] for c in s.ask(2000)])
    assert logs.min() >= -3 and logs.max() <= 3
    counts, _ = np.histogram(logs, bins=6, range=(-3, 3))
    assert counts.min() > 250  # about 333 per decade


def test_distribution_as_real():
    assert Distribution(uniform(2, 3)).as_real() == Real(2.0, 5.0)
    assert Distribution(loguniform(1e-2, 1e1)).as_real() == Real(1e-2, 1e1, prior="log-uniform")
    assert Distribution(loguniform(1e-2, 1e1, loc=1)).as_real() is None
    assert Distribution(norm()).as_real() is None


def test_for_bayes_maps_and_refuses():
    space = Space.from_spec([{"a": uniform(0, 2)}, {"b": [1, 2]}]).for_bayes()
    assert space.subspaces[0]["a"] == Real(0.0, 2.0)
    with pytest.raises(SearchSpaceError, match="scipy.stats uniform / loguniform"):
        Space.from_spec({"a": norm()}).for_bayes()
