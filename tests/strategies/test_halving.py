"""Successive halving, ASHA and Hyperband as plain strategies: asked and told, no fits."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest

from hpsearch.errors import InvalidParameterError
from hpsearch.strategies.halving import (
    AsyncBracket,
    HyperbandStrategy,
    SuccessiveHalvingStrategy,
    SyncBracket,
    ceil_keep,
    halving_plan,
    hyperband_brackets,
    sklearn_top_k,
)


def drive(strategy, score, n=4, shuffle=None):
    """Ask ``n`` at a time, tell scores of what is in flight (in a shuffled order when
    ``shuffle`` is a Random), until finished; returns every candidate asked."""
    asked, pending = [], []
    for _ in range(10_000):
        new = strategy.ask(n)
        asked += new
        pending += new
        if strategy.finished and not pending:
            return asked
        assert pending, "the strategy proposed nothing while nothing is pending and it is not finished"
        if shuffle is not None:
            shuffle.shuffle(pending)
        cand = pending.pop(0)
        strategy.tell(cand.id, score(cand))
    raise AssertionError("did not finish")


@pytest.mark.parametrize("n_candidates", [1, 10, 28, 100])
@pytest.mark.parametrize("factor", [2, 3, 2.5])
@pytest.mark.parametrize("min_resources, exhaust, aggressive", [
    (20, True, False), (50, False, True),
])
def test_plan_matches_scikit_learn(n_candidates, factor, min_resources, exhaust, aggressive):
    """The plan is what scikit-learn's _run_search computes (read back from a fitted
    HalvingRandomSearchCV; the resource is an integer parameter of a constant
    estimator, so its fits on 40 rows cost nothing)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV

    X = np.zeros((40, 1))
    y = np.arange(40) % 2
    sk = HalvingRandomSearchCV(
        DummyClassifier(), {"strategy": ["prior", "most_frequent", "stratified", "uniform"] * 30},
        n_candidates=n_candidates, factor=factor, min_resources="exhaust" if exhaust else min_resources,
        max_resources=1000, resource="random_state", aggressive_elimination=aggressive, cv=2, random_state=0,
    )
    if exhaust:  # scikit-learn starts 'exhaust' from 'smallest': 1 for a parameter
        min_resources = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y)
    plan = halving_plan(n_candidates, factor=factor, min_resources_=min_resources, max_resources_=1000,
                        exhaust=exhaust, aggressive_elimination=aggressive)
    assert plan.n_resources == sk.n_resources_
    assert plan.n_candidates == sk.n_candidates_
    assert plan.n_iterations == sk.n_iterations_
    assert plan.n_required_iterations == sk.n_required_iterations_
    assert plan.n_possible_iterations == sk.n_possible_iterations_
    assert plan.min_resources_ == sk.min_resources_
    assert plan.n_remaining_candidates == sk.n_remaining_candidates_


def test_top_k_is_scikit_learns_order_with_nan_last():
    scores = [0.5, np.nan, 0.9, 0.1, 0.7]
    assert sklearn_top_k(scores, 2) == [4, 2]  # ascending: the best last
    assert sklearn_top_k(scores, 5)[0] == 1  # nan first, i.e. the worst
    assert sklearn_top_k(scores, 0) == []


def test_sync_bracket_waits_at_each_rung_and_keeps_the_best():
    bracket = SyncBracket(range(9), [1, 3, 9], ceil_keep(3))
    jobs = [bracket.pop() for _ in range(9)]
    assert jobs == [(c, 0) for c in range(9)]
    assert bracket.pop() is None  # barrier: nothing until the whole rung is told
    for c in range(8):
        bracket.tell(c, 0, c / 10)
        assert bracket.pop() is None
    bracket.tell(8, 0, 0.0)
    assert [bracket.pop() for _ in range(4)] == [(5, 1), (6, 1), (7, 1), None]
    for c in (5, 6, 7):
        bracket.tell(c, 1, -c)
    assert bracket.pop() == (5, 2) and bracket.pop() is None
    bracket.tell(5, 2, 1.0)
    assert bracket.finished and bracket.total == 13


def test_async_bracket_promotes_without_waiting_for_the_rung():
    bracket = AsyncBracket(range(9), [1, 3, 9], ceil_keep(3), factor=3)
    assert [bracket.pop() for _ in range(3)] == [(0, 0), (1, 0), (2, 0)]
    bracket.tell(0, 0, 0.1)
    bracket.tell(1, 0, 0.9)
    assert bracket.pop() == (3, 0)  # 2 results: floor(2/3) = 0 promotable yet
    bracket.tell(2, 0, 0.5)
    # 3 results: the best of them (1) goes on at once, while 5 configurations never ran
    assert bracket.pop() == (1, 1)
    assert bracket.pop() == (4, 0)


def random_sync_and_asha(rng):
    """Random scores for 1 to 40 configurations, the (configuration, rung) jobs that
    synchronous halving runs on them, and a fresh ASHA over the same plan."""
    n = rng.randint(1, 40)
    scores = {c: rng.random() for c in range(n)}
    plan = halving_plan(n, factor=3, min_resources_=1, max_resources_=81)
    sync = SuccessiveHalvingStrategy([{"c": c} for c in range(n)], plan, factor=3, resource="r")
    asha = SuccessiveHalvingStrategy([{"c": c} for c in range(n)], plan, factor=3, resource="r",
                                     asynchronous=True)
    sync_jobs = {(c.params["c"], c.tags["iter"]) for c in drive(sync, lambda c: scores[c.params["c"]])}
    return scores, sync_jobs, asha


def test_async_bracket_ends_with_every_promotion_of_the_synchronous_one():
    """Once rungs can get no more results, ASHA promotes the synchronous top-k too."""
    rng = random.Random(0)
    for trial in range(20):
        scores, sync_jobs, asha = random_sync_and_asha(rng)
        asha_jobs = [(c.params["c"], c.tags["iter"])
                     for c in drive(asha, lambda c: scores[c.params["c"]], n=rng.randint(1, 6), shuffle=rng)]
        assert len(asha_jobs) == len(set(asha_jobs)), "a configuration ran twice at a rung"
        assert sync_jobs <= set(asha_jobs), trial
        assert asha.finished and asha.total is None


def test_strategy_sets_the_resource_parameter_or_the_sample_count():
    plan = halving_plan(3, factor=3, min_resources_=10, max_resources_=30)
    on_param = SuccessiveHalvingStrategy([{"a": 1}, {"a": 2}, {"a": 3}], plan, resource="n_estimators")
    cand = on_param.ask(1)[0]
    assert cand.params == {"a": 1, "n_estimators": 10} and cand.n_samples is None and cand.resource == 10
    on_samples = SuccessiveHalvingStrategy([{"a": 1}, {"a": 2}, {"a": 3}], plan)
    cand = on_samples.ask(1)[0]
    assert cand.params == {"a": 1} and cand.n_samples == 10 and cand.tags == {"iter": 0, "n_resources": 10}
    assert on_samples.n_samples_levels == [10, 30] and on_param.n_samples_levels == []
    with pytest.raises(InvalidParameterError, match="never asked"):
        on_samples.tell(7, 0.5)


def test_hyperband_brackets_match_dask_ml():
    from dask_ml.model_selection._hyperband import _get_hyperband_params

    # Not R=243, eta=3: there dask-ml's floor(log(243, 3)) is 4 by a rounding error
    # (log gives 4.999...), where hpsearch counts the 6 brackets Hyperband defines.
    for R, eta in [(9, 3), (27, 3), (81, 3), (100, 3), (16, 2), (50, 4), (64, 4)]:
        ours = {s: (counts[0], resources[0]) for s, resources, counts in hyperband_brackets(1, R, eta)}
        assert ours == _get_hyperband_params(R, eta), (R, eta)


def test_hyperband_runs_every_bracket_to_max_resources():
    n = HyperbandStrategy.n_configs(1, 27, 3)
    strategy = HyperbandStrategy([{"c": c} for c in range(n)], 1, 27, factor=3, resource="max_iter")
    asked = drive(strategy, lambda c: c.params["c"] % 7 + c.params["max_iter"] / 100)
    assert len(asked) == strategy.total
    by_bracket: dict[int, list[int]] = {}
    for cand in asked:
        by_bracket.setdefault(cand.tags["bracket"], []).append(cand.params["max_iter"])
    assert len(by_bracket) == 4
    assert all(max(r) == 27 for r in by_bracket.values())
    assert sorted(set(by_bracket[0])) == [1, 3, 9, 27]  # the most exploratory bracket
    assert set(by_bracket[3]) == {27}  # plain random search at full resource
    # configurations are never shared between brackets
    configs = {}
    for cand in asked:
        assert configs.setdefault(cand.params["c"], cand.tags["bracket"]) == cand.tags["bracket"]


def test_hyperband_hands_out_work_from_every_bracket_at_once():
    n = HyperbandStrategy.n_configs(1, 9, 3)
    strategy = HyperbandStrategy([{"c": c} for c in range(n)], 1, 9, factor=3, resource="max_iter")
    first = strategy.ask(6)
    assert {c.tags["bracket"] for c in first} == {0, 1, 2}
    assert math.isclose(sum(1 for c in first if c.tags["bracket"] == 0), 2)


def _asha_evaluations(strategy, score_of, workers=4):
    """Drive a strategy as ``workers`` slots would (the oldest task ends first)."""
    running, asked = [], []
    while not strategy.finished:
        while len(running) < workers and (got := strategy.ask(1)):
            running.append(got[0])
            asked.append(got[0])
        if not running:
            break
        cand = running.pop(0)
        strategy.tell(cand.id, score_of(cand.params))
    return asked


def test_asha_over_a_sorted_grid_promotes_about_what_synchronous_halving_does():
    # A grid is sorted by parameter value, and scores often trend along it: taken in that
    # order, every new result ranks high among those so far and ASHA would promote most
    # configurations. It takes the grid in a random order instead.
    from hpsearch.adaptive import AdaptiveOptions, make_adaptive_strategy
    from hpsearch.space import Space

    space = Space.from_spec({"alpha": list(range(240))})
    counts = {}
    for asynchronous in (False, True):
        opts = AdaptiveOptions(factor=3, resource="max_iter", min_resources=1, max_resources=243,
                               asynchronous=asynchronous)
        strategy = make_adaptive_strategy("halving", space, None, opts, n_iter=None, n_samples=1000,
                                          n_splits=5, y=None, cv=None, random_state=0)
        counts[asynchronous] = len(_asha_evaluations(strategy, lambda p: float(p["alpha"])))
    assert counts[False] == 240 + 80 + 27 + 9 + 3
    assert counts[True] <= 1.15 * counts[False], counts


def test_halving_strategies_are_asked_inline():
    # ask and tell take microseconds: the scheduler runs them on the thread handling
    # results (tests/workers/test_threads.py), so the next rung's work waits for no
    # other thread to wake up.
    assert SuccessiveHalvingStrategy.inline is True and HyperbandStrategy.inline is True


def test_async_bracket_promotes_into_idle_slots_from_the_lowest_rung():
    bracket = AsyncBracket(range(3), [1, 3, 9], ceil_keep(3), factor=3)
    assert [bracket.pop() for _ in range(3)] == [(0, 0), (1, 0), (2, 0)]
    for config, score in ((0, 0.1), (1, 0.9), (2, 0.5)):
        bracket.tell(config, 0, score)
    assert bracket.pop() == (1, 1)  # the top third of rung 0
    assert bracket.pop() is None  # nothing due: 1 is climbing, alone
    # an idle slot gets the best configuration not yet promoted, one rung up
    assert bracket.pop_idle() == (2, 1)
    assert bracket.pop_idle() == (0, 1)
    assert bracket.pop_idle() is None  # rung 0 all promoted, rung 1 has no result yet
    bracket.tell(2, 1, 0.95)  # an idle promotion's result ranks with the others...
    assert bracket.pop() is None  # ...but adds nothing to the quota: floor(0 / 3) = 0
    bracket.tell(1, 1, 0.6)
    bracket.tell(0, 1, 0.2)
    # rung 1 is closed with one regular result: keep(1) = 1 goes on, the best ranked (2)
    assert bracket.pop() == (2, 2)
    assert bracket.pop() is None and bracket.pop_idle() == (1, 2)
    assert bracket.idle_promoted == [(2, 1), (0, 1), (1, 2)]
    bracket.tell(2, 2, 0.9)
    bracket.tell(1, 2, 0.8)
    assert bracket.finished


def test_ask_idle_tags_asha_candidates_and_synchronous_halving_gives_none():
    configs = [{"c": c} for c in range(9)]
    plan = halving_plan(9, factor=3, min_resources_=1, max_resources_=9)
    sync = SuccessiveHalvingStrategy(configs, plan, factor=3, resource="r")
    asha = SuccessiveHalvingStrategy(configs, plan, factor=3, resource="r", asynchronous=True)
    first = sync.ask(9)
    assert "idle_promotion" not in first[0].tags  # scikit-learn's cv_results_ columns
    for cand in first[:8]:
        sync.tell(cand.id, cand.params["c"])
    assert not hasattr(sync, "ask_idle")  # the scheduler never asks it
    regular = asha.ask(9)
    assert {c.tags["idle_promotion"] for c in regular} == {False}
    for cand in regular:
        asha.tell(cand.id, cand.params["c"])
    promoted = asha.ask(9)  # rung 0 closed: its top 3 go on
    assert sorted(c.params["c"] for c in promoted) == [6, 7, 8]
    idle = asha.ask_idle(2)
    assert [(c.params["c"], c.tags["iter"], c.tags["idle_promotion"]) for c in idle] == [(5, 1, True), (4, 1, True)]
    with pytest.raises(InvalidParameterError):
        asha.ask_idle(-1)


def test_asha_with_idle_promotions_still_runs_every_synchronous_promotion():
    """Idle promotions at every chance (the most a scheduler may ask) keep the search
    finite, and with scores that rank configurations alike at every rung (so an idle
    promotion's result never outranks a regular one) ASHA's guarantee intact."""
    rng = random.Random(1)
    for trial in range(20):
        scores, sync_jobs, asha = random_sync_and_asha(rng)
        asked, pending = [], []
        while not (asha.finished and not pending):
            new = asha.ask(rng.randint(1, 6))
            if not new and pending:
                new = asha.ask_idle(1)
            asked += new
            pending += new
            assert pending
            rng.shuffle(pending)
            cand = pending.pop(0)
            asha.tell(cand.id, scores[cand.params["c"]])
        jobs = [(c.params["c"], c.tags["iter"]) for c in asked]
        assert len(jobs) == len(set(jobs)), "a configuration ran twice at a rung"
        assert sync_jobs <= set(jobs), trial
