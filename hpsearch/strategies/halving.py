"""Successive halving, asynchronous successive halving (ASHA) and Hyperband.

Each configuration is first evaluated with a small amount of a *resource* — the
number of training samples, or an integer parameter such as ``n_estimators`` or
``max_iter`` — and only the best ``1 / factor`` of them go on to the next *rung*,
with ``factor`` times more resource. Every evaluation is a
:class:`~hpsearch.strategies.base.Candidate` of its own (its ``tags`` say ``iter``,
the rung, and ``n_resources``), so ``cv_results_`` lists one row per (configuration,
rung), as scikit-learn's ``HalvingGridSearchCV`` does.

A *bracket* is one run of successive halving over a list of configurations:

* :class:`SyncBracket` waits for the whole rung before promoting (scikit-learn's
  semantics: same candidates, same order, same ``cv_results_``);
* :class:`AsyncBracket` (ASHA, Li et al. 2020) promotes a configuration as soon as
  it is in the top ``1 / factor`` of the results its rung has so far, so no worker
  waits at a rung barrier while there is work; once a rung can receive no more
  results, its top ``keep`` (as in the synchronous bracket) are promoted too, so
  ASHA evaluates every promotion synchronous halving makes, and possibly a few more.

:class:`SuccessiveHalvingStrategy` runs one bracket; :class:`HyperbandStrategy` runs
Hyperband's brackets side by side (each with a different trade-off between the number
of configurations and their starting resource), handing out work from all of them.
Like every strategy these are plain objects: no threads, no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import InvalidParameterError
from .base import Candidate

__all__ = [
    "HalvingPlan",
    "halving_plan",
    "hyperband_brackets",
    "SyncBracket",
    "AsyncBracket",
    "SuccessiveHalvingStrategy",
    "HyperbandStrategy",
]

Keep = Callable[[int, int], int]  # (configurations in the rung, rung) -> how many go on


@dataclass(frozen=True)
class HalvingPlan:
    """The rungs of scikit-learn's successive halving for a number of candidates.

    Attributes mirror ``HalvingGridSearchCV``'s: ``n_resources`` is the resource of
    each iteration, ``n_candidates`` the configurations evaluated in each.
    """

    min_resources_: int
    max_resources_: int
    n_required_iterations: int
    n_possible_iterations: int
    n_iterations: int
    n_resources: list[int]
    n_candidates: list[int]
    n_remaining_candidates: int


def halving_plan(
    n_candidates: int,
    *,
    factor: float,
    min_resources_: int,
    max_resources_: int,
    exhaust: bool = False,
    aggressive_elimination: bool = False,
) -> HalvingPlan:
    """Plan successive halving exactly as scikit-learn's ``_run_search`` does.

    ``min_resources_`` is the resolved minimum ("smallest" already applied);
    ``exhaust=True`` raises it so the last iteration uses as much resource as it can.

    Examples
    --------
    >>> p = halving_plan(10, factor=3, min_resources_=20, max_resources_=1000, exhaust=True)
    >>> p.n_resources, p.n_candidates
    ([111, 333, 999], [10, 4, 2])
    """
    if n_candidates < 1:
        raise InvalidParameterError("successive halving needs at least one candidate")
    n_required = 1 + math.floor(math.log(n_candidates, factor))
    min_r: float = min_resources_  # a float factor makes it a float, as in scikit-learn
    if exhaust:
        min_r = max(min_r, max_resources_ // factor ** (n_required - 1))
    n_possible = 1 + math.floor(math.log(max_resources_ // min_r, factor))
    n_iterations = n_required if aggressive_elimination else min(n_possible, n_required)
    resources, counts = [], []
    count = n_candidates
    for itr in range(n_iterations):
        power = max(0, itr - n_required + n_possible) if aggressive_elimination else itr
        resources.append(min(int(factor**power * min_r), max_resources_))
        counts.append(count)
        count = math.ceil(count / factor)
    return HalvingPlan(int(min_r), int(max_resources_), n_required, n_possible, n_iterations,
                       resources, counts, count)


def hyperband_brackets(min_resources: int, max_resources: int, factor: float) -> list[tuple[int, list[int], list[int]]]:
    """Hyperband's brackets (Li et al. 2018), most exploratory first.

    Each is ``(s, resources, counts)``: bracket ``s`` starts ``counts[0]`` =
    ``ceil((s_max + 1) / (s + 1) * factor**s)`` configurations at ``max_resources /
    factor**s`` and keeps ``floor(counts[0] / factor**i)`` of them at rung ``i``, as in
    dask-ml's ``HyperbandSearchCV`` (``R = max_resources / min_resources``).

    Examples
    --------
    >>> [(s, r, n) for s, r, n in hyperband_brackets(1, 9, 3)]
    [(2, [1, 3, 9], [9, 3, 1]), (1, [3, 9], [5, 1]), (0, [9], [3])]
    """
    ratio = max_resources / min_resources
    s_max = math.floor(math.log(ratio, factor) + 1e-9)
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * factor**s - 1e-9)
        resources = [max(min_resources, int(max_resources * factor ** (i - s) + 1e-9)) for i in range(s + 1)]
        resources[-1] = max_resources
        counts = [max(1, math.floor(n * factor**-i + 1e-9)) for i in range(s + 1)]
        brackets.append((s, resources, counts))
    return brackets


def sklearn_top_k(scores: Sequence[float], k: int) -> list[int]:
    """Positions of the ``k`` best scores, in scikit-learn's ``_top_k`` order
    (ascending, nan first: the order the next iteration lists them in)."""
    array = np.asarray(scores, dtype=np.float64)
    order = np.roll(np.argsort(array), np.count_nonzero(np.isnan(array)))
    return [int(i) for i in order[-k:]] if k > 0 else []


class Bracket(Protocol):
    resources: list[int]

    def pop(self) -> tuple[int, int] | None: ...

    def tell(self, config: int, rung: int, score: float) -> None: ...

    @property
    def finished(self) -> bool: ...


class SyncBracket:
    """Successive halving with a barrier at each rung.

    ``pop`` hands out the configurations of the current rung, in order; when every
    one of them is told, the best ``keep(n, rung)`` (scikit-learn's ``_top_k``) make
    the next rung. ``None`` means: nothing to do until more scores arrive (or done).
    """

    def __init__(self, configs: Sequence[int], resources: Sequence[int], keep: Keep) -> None:
        self.resources = list(resources)
        self.keep = keep
        self.rung = 0
        self.members = list(configs)
        self.history: list[list[int]] = [list(configs)]
        self._next = 0
        self._scores: dict[int, float] = {}

    def pop(self) -> tuple[int, int] | None:
        if self.finished or self._next >= len(self.members):
            return None
        config = self.members[self._next]
        self._next += 1
        return config, self.rung

    def tell(self, config: int, rung: int, score: float) -> None:
        if rung != self.rung or config not in self.members:
            raise InvalidParameterError(f"configuration {config} was not asked for at rung {rung}")
        self._scores[config] = score
        if len(self._scores) == len(self.members):
            chosen = sklearn_top_k([self._scores[c] for c in self.members], self.keep(len(self.members), self.rung))
            self.members = [self.members[i] for i in chosen]
            self.rung += 1
            self._next = 0
            self._scores = {}
            if not self.finished:
                self.history.append(list(self.members))

    @property
    def finished(self) -> bool:
        return self.rung >= len(self.resources)

    @property
    def total(self) -> int:
        count, total = len(self.history[0]), 0
        for rung in range(len(self.resources)):
            total += count
            count = self.keep(count, rung)
        return total


class AsyncBracket:
    """Asynchronous successive halving (ASHA).

    ``pop`` prefers a promotion from the highest rung that has one: a configuration
    ranked within the first ``floor(n / factor)`` of the ``n`` results its rung has so
    far. A rung that can receive no more results promotes its first ``keep(n, rung)``.
    Otherwise ``pop`` starts a new configuration at rung 0. Ties rank by arrival.

    ``pop_idle`` is asked only for slots that would otherwise sit idle (``pop`` has
    nothing: no new configuration is left and no promotion is due, so the search's last
    configurations are climbing the rungs with few tasks in flight). It promotes the
    best not-yet-promoted configuration of the lowest rung that has one: beyond ASHA's
    quota, one rung up, where tasks are the shortest, so a regular promotion that
    becomes due meanwhile waits at most for one short task. Its result is ranked with
    the others at that rung (a better one takes a place in the top ``1 / factor``), but
    the quota counts only the other results, so these promotions never make ASHA
    promote more. ``idle_promoted`` lists them, as (configuration, rung reached).
    """

    def __init__(self, configs: Sequence[int], resources: Sequence[int], keep: Keep, factor: float) -> None:
        self.resources = list(resources)
        self.keep = keep
        self.factor = factor
        self._base = deque(configs)
        self._results: list[dict[int, float]] = [{} for _ in self.resources]
        self._promoted: list[set[int]] = [set() for _ in self.resources]
        self._outstanding = [0] * len(self.resources)
        self.idle_promoted: list[tuple[int, int]] = []
        self._regular = [0] * len(self.resources)  # results per rung, those of idle promotions left out
        self._idle_jobs: set[tuple[int, int]] = set()
        # memos of _closed / _promotable, valid until the next pop or tell
        self._closed_memo: dict[int, bool] = {}
        self._promotable_memo: dict[int, int | None] = {}

    def _changed(self) -> None:
        self._closed_memo.clear()
        self._promotable_memo.clear()

    def _closed(self, rung: int) -> bool:
        """No result can arrive at ``rung`` any more."""
        if rung not in self._closed_memo:
            self._closed_memo[rung] = self._compute_closed(rung)
        return self._closed_memo[rung]

    def _compute_closed(self, rung: int) -> bool:
        if self._outstanding[rung]:
            return False
        if rung == 0:
            return not self._base
        return self._closed(rung - 1) and self._promotable(rung - 1) is None

    def _promotable(self, rung: int) -> int | None:
        if rung not in self._promotable_memo:
            self._promotable_memo[rung] = self._compute_promotable(rung)
        return self._promotable_memo[rung]

    def _compute_promotable(self, rung: int) -> int | None:
        done = self._results[rung]
        if rung + 1 >= len(self.resources) or not done:
            return None
        n = self._regular[rung]
        quota = self.keep(n, rung) if self._closed(rung) else math.floor(n / self.factor)
        if quota <= 0:
            return None
        ranked = sorted(done, key=lambda c: -done[c] if done[c] == done[c] else math.inf)
        for config in ranked[:quota]:
            if config not in self._promoted[rung]:
                return config
        return None

    def pop(self) -> tuple[int, int] | None:
        for rung in range(len(self.resources) - 2, -1, -1):
            config = self._promotable(rung)
            if config is not None:
                self._changed()
                self._promoted[rung].add(config)
                self._outstanding[rung + 1] += 1
                return config, rung + 1
        if self._base:
            self._changed()
            self._outstanding[0] += 1
            return self._base.popleft(), 0
        return None

    def pop_idle(self) -> tuple[int, int] | None:
        """A promotion beyond the quota, for a slot that would sit idle (see the class)."""
        for rung in range(len(self.resources) - 1):
            done = self._results[rung]
            waiting = [c for c in done if c not in self._promoted[rung]]
            if waiting:
                config = max(waiting, key=lambda c: done[c] if done[c] == done[c] else -math.inf)
                self._changed()
                self._promoted[rung].add(config)
                self._outstanding[rung + 1] += 1
                self.idle_promoted.append((config, rung + 1))
                self._idle_jobs.add((config, rung + 1))
                return config, rung + 1
        return None

    def tell(self, config: int, rung: int, score: float) -> None:
        if not 0 <= rung < len(self.resources) or self._outstanding[rung] <= 0:
            raise InvalidParameterError(f"configuration {config} was not asked for at rung {rung}")
        self._changed()
        self._outstanding[rung] -= 1
        if (config, rung) not in self._idle_jobs:
            self._regular[rung] += 1
        self._results[rung][config] = float(score)

    @property
    def finished(self) -> bool:
        return not self._base and not any(self._outstanding) and all(
            self._promotable(rung) is None for rung in range(len(self.resources))
        )


def ceil_keep(factor: float) -> Keep:
    """scikit-learn's rule: ``ceil(n / factor)`` go on."""
    return lambda n, rung: math.ceil(n / factor)


class _BracketStrategy:
    """Runs brackets side by side and turns their work into candidates.

    ``ask`` and ``tell`` take microseconds, so the scheduler calls them on the thread
    that handles results (``inline``), not through the strategy thread: the next rung's
    work reaches a free slot in the pass that handled the score making it ready.
    """

    inline = True
    ask_idle: Callable[[int], list[Candidate]]  # ASHA only (see _ask_idle)

    def __init__(self, configs: Sequence[Mapping[str, Any]], brackets: Sequence[Bracket], resource: str,
                 *, bracket_tag: bool = False) -> None:
        self.configs = [dict(c) for c in configs]
        self.brackets = list(brackets)
        self.resource = resource
        self._bracket_tag = bracket_tag
        self._jobs: dict[int, tuple[int, int, int]] = {}  # candidate id -> (bracket, config, rung)
        self._asked: list[tuple[int, int]] = []  # candidate id -> (bracket, config)
        self._told: list[int] = []  # candidate ids in the order their scores arrived
        self._next_id = 0
        self._turn = 0
        if any(isinstance(b, AsyncBracket) for b in self.brackets):  # the scheduler asks only then
            self.ask_idle = self._ask_idle

    def _candidate(self, b: int, config: int, rung: int, *, idle: bool = False) -> Candidate:
        amount = self.brackets[b].resources[rung]
        params = dict(self.configs[config])
        n_samples = None
        if self.resource == "n_samples":
            n_samples = amount
        else:
            params[self.resource] = amount
        tags: dict[str, Any] = {"iter": rung, "n_resources": amount}
        if self._bracket_tag:
            tags["bracket"] = b
        if isinstance(self.brackets[b], AsyncBracket):
            tags["idle_promotion"] = idle
        cid = self._next_id
        self._next_id += 1
        self._jobs[cid] = (b, config, rung)
        self._asked.append((b, config))
        return Candidate(cid, params, resource=amount, n_samples=n_samples, tags=tags)

    def ask(self, n: int) -> list[Candidate]:
        if n < 0:
            raise InvalidParameterError(f"ask(n) needs n >= 0, got {n}")
        out: list[Candidate] = []
        idle = 0  # brackets in a row with nothing to give
        while len(out) < n and idle < len(self.brackets):
            b = self._turn
            self._turn = (self._turn + 1) % len(self.brackets)
            job = self.brackets[b].pop()
            if job is None:
                idle += 1
                continue
            idle = 0
            out.append(self._candidate(b, *job))
        return out

    def _ask_idle(self, n: int) -> list[Candidate]:
        """Up to ``n`` candidates for slots that would otherwise sit idle, asked by the
        scheduler only when ``ask`` has nothing and a slot is free: promotions beyond
        ASHA's quota (:meth:`AsyncBracket.pop_idle`), tagged ``idle_promotion``.
        It is the strategy's ``ask_idle`` when a bracket is asynchronous; synchronous
        brackets give none (their rungs are scikit-learn's)."""
        if n < 0:
            raise InvalidParameterError(f"ask_idle(n) needs n >= 0, got {n}")
        out: list[Candidate] = []
        for b, bracket in enumerate(self.brackets):
            pop_idle = getattr(bracket, "pop_idle", None)
            while pop_idle is not None and len(out) < n and (job := pop_idle()) is not None:
                out.append(self._candidate(b, *job, idle=True))
        return out

    def tell(self, candidate_id: int, score: float) -> None:
        job = self._jobs.pop(candidate_id, None)
        if job is None:
            raise InvalidParameterError(f"tell: candidate {candidate_id} was never asked for (or told twice)")
        b, config, rung = job
        self._told.append(candidate_id)
        self.brackets[b].tell(config, rung, float(score))

    @property
    def finished(self) -> bool:
        return all(b.finished for b in self.brackets)

    @property
    def total(self) -> int | None:
        totals = [getattr(b, "total", None) for b in self.brackets]
        return None if any(t is None for t in totals) else sum(int(t) for t in totals if t is not None)

    @property
    def final_resource(self) -> int:
        """The most resource any candidate gets (no rung follows it)."""
        return max(r for b in self.brackets for r in b.resources)

    def model_id(self, candidate_id: int) -> Any:
        """The configuration a candidate evaluates: its index, ``"bracket=b-i"`` with
        several brackets (dask-ml's ``model_id``)."""
        b, config = self._asked[candidate_id]
        return f"bracket={b}-{config}" if self._bracket_tag else config

    def history(self, cv_results: Mapping[str, Any], metric: str) -> tuple[list[dict[str, Any]], dict[Any, list[dict[str, Any]]]]:
        """dask-ml's ``history_`` and ``model_history_``: one record per evaluation (a
        configuration at one rung), in the order the scores arrived, and the records
        of each configuration. ``cv_results_`` rows are the candidates in id order."""
        params = cv_results["params"]
        if len(params) != len(self._asked):
            raise ValueError("cv_results_ does not hold every candidate")
        history: list[dict[str, Any]] = []
        models: dict[Any, list[dict[str, Any]]] = {}
        for cid in self._told:
            record = {
                "model_id": self.model_id(cid),
                "params": {k: v for k, v in params[cid].items() if k != self.resource},
                "bracket": self._asked[cid][0],
                "iter": int(cv_results["iter"][cid]),
                "n_resources": int(cv_results["n_resources"][cid]),
                "score": float(cv_results[f"mean_test_{metric}"][cid]),
                "mean_fit_time": float(cv_results["mean_fit_time"][cid]),
                "mean_score_time": float(cv_results["mean_score_time"][cid]),
            }
            if "idle_promotion" in cv_results:
                record["idle_promotion"] = bool(cv_results["idle_promotion"][cid])
            history.append(record)
            models.setdefault(record["model_id"], []).append(record)
        return history, models

    @property
    def n_samples_levels(self) -> list[int]:
        """Training-set sizes the search uses, when the resource is ``n_samples``."""
        if self.resource != "n_samples":
            return []
        return sorted({r for b in self.brackets for r in b.resources})

    def best_index(self, cv_results: Mapping[str, Any], metric: str) -> int:
        """The best candidate among those evaluated with the most resource."""
        resources = np.asarray(cv_results["n_resources"])
        rows = np.flatnonzero(resources == resources.max())
        scores = np.asarray(cv_results[f"mean_test_{metric}"])[rows]
        return int(rows[0] if np.isnan(scores).all() else rows[np.nanargmax(scores)])


class SuccessiveHalvingStrategy(_BracketStrategy):
    """Successive halving over a fixed list of configurations.

    Parameters
    ----------
    configs : list of dict
        The configurations (e.g. a ``ParameterGrid``), in order.
    plan : HalvingPlan
        Resource and candidate count of each iteration (:func:`halving_plan`).
    factor : float
        Each iteration keeps ``ceil(n / factor)`` configurations.
    resource : str
        ``"n_samples"``, or the name of an integer parameter set to each rung's resource.
    asynchronous : bool
        False: scikit-learn's synchronous halving. True: ASHA.

    Examples
    --------
    >>> plan = halving_plan(4, factor=2, min_resources_=10, max_resources_=40)
    >>> s = SuccessiveHalvingStrategy([{"C": c} for c in (1, 2, 3, 4)], plan, factor=2,
    ...                               resource="max_iter")
    >>> [c.params for c in s.ask(10)]
    [{'C': 1, 'max_iter': 10}, {'C': 2, 'max_iter': 10}, {'C': 3, 'max_iter': 10}, {'C': 4, 'max_iter': 10}]
    >>> for cid, score in enumerate([0.1, 0.4, 0.3, 0.2]):
    ...     s.tell(cid, score)
    >>> [(c.params, c.tags["iter"]) for c in s.ask(10)]
    [({'C': 3, 'max_iter': 20}, 1), ({'C': 2, 'max_iter': 20}, 1)]
    """

    def __init__(self, configs: Sequence[Mapping[str, Any]], plan: HalvingPlan, *, factor: float = 3,
                 resource: str = "n_samples", asynchronous: bool = False) -> None:
        self.plan = plan
        self.factor = factor
        self.asynchronous = asynchronous
        keep = ceil_keep(factor)
        indices = list(range(len(configs)))
        bracket: Bracket
        if asynchronous:
            bracket = AsyncBracket(indices, plan.n_resources, keep, factor)
        else:
            bracket = SyncBracket(indices, plan.n_resources, keep)
        super().__init__(configs, [bracket], resource)

    def best_index(self, cv_results: Mapping[str, Any], metric: str) -> int:
        """Synchronous: scikit-learn's rule (the best of the last iteration)."""
        if self.asynchronous:
            return super().best_index(cv_results, metric)
        iters = np.asarray(cv_results["iter"])
        rows = np.flatnonzero(iters == iters.max())
        scores = np.asarray(cv_results[f"mean_test_{metric}"])[rows]
        return int(rows[0] if np.isnan(scores).all() else rows[np.nanargmax(scores)])

    def search_attributes(self, cv_results: Mapping[str, Any]) -> dict[str, Any]:
        """``HalvingGridSearchCV``'s fitted attributes, from what actually ran."""
        iters = np.asarray(cv_results["iter"])
        resources = np.asarray(cv_results["n_resources"])
        n_iterations = int(iters.max()) + 1
        counts = [int(np.count_nonzero(iters == i)) for i in range(n_iterations)]
        return {
            "n_resources_": [int(resources[iters == i][0]) for i in range(n_iterations)],
            "n_candidates_": counts,
            "n_iterations_": n_iterations,
            "n_required_iterations_": self.plan.n_required_iterations,
            "n_possible_iterations_": self.plan.n_possible_iterations,
            "min_resources_": self.plan.min_resources_,
            "max_resources_": self.plan.max_resources_,
            "n_remaining_candidates_": math.ceil(counts[-1] / self.factor),
        }


class HyperbandStrategy(_BracketStrategy):
    """Hyperband: brackets of successive halving run side by side.

    Parameters
    ----------
    configs : list of dict
        Configurations for the brackets, used in order: the first ``counts[0]`` go
        to the most exploratory bracket, and so on (:meth:`n_configs` says how many
        are needed).
    min_resources, max_resources : int
        The least resource a configuration gets, and the most.
    factor : float
        Hyperband's ``eta``: each rung keeps ``1 / factor`` of the configurations.
    resource : str
        ``"n_samples"``, or the name of an integer parameter.
    asynchronous : bool
        Run each bracket as ASHA instead of with rung barriers.

    Examples
    --------
    >>> n = HyperbandStrategy.n_configs(1, 9, 3)
    >>> s = HyperbandStrategy([{"alpha": i} for i in range(n)], 1, 9, factor=3, resource="max_iter")
    >>> n, s.total, len(s.brackets)
    (17, 22, 3)
    """

    def __init__(self, configs: Sequence[Mapping[str, Any]], min_resources: int, max_resources: int, *,
                 factor: float = 3, resource: str = "n_samples", asynchronous: bool = False) -> None:
        plan = hyperband_brackets(min_resources, max_resources, factor)
        needed = sum(counts[0] for _, _, counts in plan)
        if len(configs) < needed:
            raise InvalidParameterError(f"Hyperband needs {needed} configurations, got {len(configs)}")
        self.factor = factor
        self.asynchronous = asynchronous
        self.min_resources_ = min_resources
        self.max_resources_ = max_resources
        brackets: list[Bracket] = []
        start = 0
        for _s, resources, counts in plan:
            indices = list(range(start, start + counts[0]))
            start += counts[0]
            keep = _counts_keep(counts)
            if asynchronous:
                brackets.append(AsyncBracket(indices, resources, keep, factor))
            else:
                brackets.append(SyncBracket(indices, resources, keep))
        super().__init__(configs[:needed], brackets, resource, bracket_tag=True)

    @staticmethod
    def n_configs(min_resources: int, max_resources: int, factor: float) -> int:
        """How many configurations the brackets start with, in all."""
        return sum(counts[0] for _, _, counts in hyperband_brackets(min_resources, max_resources, factor))

    def search_attributes(self, cv_results: Mapping[str, Any]) -> dict[str, Any]:
        brackets = np.asarray(cv_results["bracket"])
        return {
            "n_brackets_": len(self.brackets),
            "min_resources_": self.min_resources_,
            "max_resources_": self.max_resources_,
            "n_candidates_": [int(np.count_nonzero(brackets == b)) for b in range(len(self.brackets))],
        }


def _counts_keep(counts: Sequence[int]) -> Keep:
    return lambda n, rung: min(n, counts[rung + 1]) if rung + 1 < len(counts) else 0
