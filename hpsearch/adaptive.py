"""Adaptive search in ``run_search``: successive halving, ASHA and Hyperband.

This module turns ``run_search``'s adaptive arguments into a strategy from
:mod:`hpsearch.strategies.halving`, checks them before any fit (with scikit-learn's
rules and messages, plus a hint), and prepares the subsampled splits a search on the
number of samples needs: every CV fold is subsampled once per training-set size,
exactly as scikit-learn's ``HalvingGridSearchCV`` does (``sklearn.utils.resample`` of
the train and of the test indices, with the search's ``random_state``), and appended
to the context's splits, so workers evaluate a subsampled fold like any other.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import is_classifier

from .errors import InvalidParameterError, SearchSpaceError
from .scheduler.pruning import PairedPruner
from .space import Space
from .strategies.base import Candidate
from .strategies.halving import HyperbandStrategy, SuccessiveHalvingStrategy, halving_plan

__all__ = ["ADAPTIVE_STRATEGIES", "AdaptiveOptions", "make_adaptive_strategy", "subsampled_splits",
           "tag_columns", "check_prune"]

ADAPTIVE_STRATEGIES = ("halving", "halving_random", "hyperband")


@dataclass(frozen=True)
class AdaptiveOptions:
    """``run_search``'s adaptive arguments, checked (see :func:`hpsearch.run_search`)."""

    factor: float = 3
    resource: str = "n_samples"
    min_resources: int | str = "exhaust"
    max_resources: int | str = "auto"
    aggressive_elimination: bool = False
    asynchronous: bool = False
    incremental: bool = False

    @classmethod
    def checked(cls, estimator: Any, space: Space, kind: str, **kwargs: Any) -> AdaptiveOptions:
        """The options, or an error naming the bad one and the fix; no data needed."""
        opts = cls(**kwargs)
        if isinstance(opts.factor, bool) or not isinstance(opts.factor, numbers.Real) or not opts.factor > 1:
            raise InvalidParameterError(
                f"factor must be a number > 1 (the fraction 1/factor of candidates kept at each "
                f"step), got {opts.factor!r}; scikit-learn's default is 3"
            )
        if not isinstance(opts.resource, str):
            raise InvalidParameterError(
                f"resource must be 'n_samples' or the name of an integer parameter of the "
                f"estimator, got {opts.resource!r}"
            )
        if not isinstance(opts.incremental, (bool, np.bool_)):
            raise InvalidParameterError(f"incremental must be True or False, got {opts.incremental!r}")
        if opts.incremental and opts.resource == "n_samples":
            from .incremental import check_incremental

            check_incremental(estimator, opts.resource)  # refused, with the fix
        if opts.resource != "n_samples":
            valid = estimator.get_params()
            if opts.resource not in valid:
                raise InvalidParameterError(
                    f"Cannot use resource={opts.resource} which is not supported by estimator "
                    f"{type(estimator).__name__}: it has no parameter {opts.resource!r}. Use "
                    f"resource='n_samples' or one of its integer parameters, e.g. n_estimators or "
                    f"max_iter; its parameters are {sorted(valid)!r}"
                )
            for sub in space.subspaces:
                if opts.resource in sub:
                    raise InvalidParameterError(
                        f"Cannot use parameter {opts.resource} as the resource since it is part of "
                        "the searched parameters; remove it from the space (the search sets it)"
                    )
            if opts.incremental:
                from .incremental import check_incremental

                check_incremental(estimator, opts.resource)
        for name, value, words in (("min_resources", opts.min_resources, ("exhaust", "smallest")),
                                   ("max_resources", opts.max_resources, ("auto",))):
            if isinstance(value, str):
                if value not in words:
                    raise InvalidParameterError(
                        f"{name} must be a positive integer or one of {list(words)}, got {value!r}"
                    )
            elif isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InvalidParameterError(f"{name} must be a positive integer or one of {list(words)}, got {value!r}")
        if opts.max_resources == "auto" and opts.resource != "n_samples":
            raise InvalidParameterError(
                "resource can only be 'n_samples' when max_resources='auto'; give "
                f"max_resources, the most {opts.resource} a candidate may get (e.g. max_resources=100)"
            )
        if (isinstance(opts.min_resources, numbers.Integral) and isinstance(opts.max_resources, numbers.Integral)
                and opts.min_resources > opts.max_resources):
            raise InvalidParameterError(
                f"min_resources_={opts.min_resources} is greater than max_resources_={opts.max_resources}. "
                "Lower min_resources or raise max_resources"
            )
        return opts


def _smallest(opts: AdaptiveOptions, estimator: Any, y: Any, n_splits: int) -> int:
    """scikit-learn's 'smallest' min_resources: 2 samples per fold and class, or 1."""
    if isinstance(opts.min_resources, numbers.Integral):
        return int(opts.min_resources)
    if opts.resource != "n_samples":
        return 1
    smallest = n_splits * 2
    if is_classifier(estimator):
        from sklearn.utils.multiclass import check_classification_targets

        check_classification_targets(y)
        smallest *= np.unique(y).shape[0]
    return smallest


def _check_constant_splits(cv: Any) -> None:
    try:
        from sklearn.model_selection._split import _yields_constant_splits
    except ImportError:  # a scikit-learn without the helper: the splits are computed once anyway
        return
    if not _yields_constant_splits(cv):
        raise InvalidParameterError(
            "The cv parameter must yield consistent folds across calls to split(). Set its "
            "random_state to an int, or set shuffle=False."
        )


def make_adaptive_strategy(
    kind: str,
    space: Space,
    estimator: Any,
    opts: AdaptiveOptions,
    *,
    n_iter: Any,
    n_samples: int,
    n_splits: int,
    y: Any,
    cv: Any,
    random_state: Any,
) -> SuccessiveHalvingStrategy | HyperbandStrategy:
    """The strategy of an adaptive search, its resources resolved as scikit-learn does."""
    from sklearn.model_selection import ParameterSampler

    _check_constant_splits(cv)
    min_r = _smallest(opts, estimator, y, n_splits)
    max_r = n_samples if opts.max_resources == "auto" else int(opts.max_resources)
    if min_r > max_r:
        raise InvalidParameterError(
            f"min_resources_={min_r} is greater than max_resources_={max_r}. Lower min_resources "
            f"or raise max_resources (with resource='n_samples', max_resources is at most the "
            f"{n_samples} samples)"
        )
    if kind == "hyperband":
        needed = HyperbandStrategy.n_configs(min_r, max_r, opts.factor)
        configs = _sample(space, needed, random_state)
        if len(configs) < needed:
            raise SearchSpaceError(
                f"Hyperband with min_resources={min_r}, max_resources={max_r} and factor={opts.factor} "
                f"needs {needed} distinct candidates but the space has only {len(configs)}; use a "
                "larger space, a larger factor, or strategy='halving'"
            )
        return HyperbandStrategy(configs, min_r, max_r, factor=opts.factor, resource=opts.resource,
                                 asynchronous=opts.asynchronous)
    if kind == "halving":
        space.check_grid()
        configs = [dict(p) for p in space.grid()]
    else:
        if n_iter == "exhaust":
            if opts.min_resources == "exhaust":
                raise InvalidParameterError(
                    "n_candidates and min_resources cannot be both set to 'exhaust'; give one of them a number"
                )
            n_iter = max_r // min_r
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:
            raise InvalidParameterError(f"n_iter (the first iteration's candidates) must be an integer >= 1 or 'exhaust', got {n_iter!r}")
        configs = [dict(p) for p in ParameterSampler(space.sampler_spec(), int(n_iter), random_state=random_state)]
    if not configs:
        raise SearchSpaceError("the search space has no candidate")
    if opts.asynchronous and kind == "halving":
        configs = _shuffled(configs, random_state)
    plan = halving_plan(len(configs), factor=opts.factor, min_resources_=min_r, max_resources_=max_r,
                        exhaust=opts.min_resources == "exhaust",
                        aggressive_elimination=opts.aggressive_elimination)
    return SuccessiveHalvingStrategy(configs, plan, factor=opts.factor, resource=opts.resource,
                                     asynchronous=opts.asynchronous)


def _shuffled(configs: list[dict[str, Any]], random_state: Any) -> list[dict[str, Any]]:
    """The grid in a random order, for ASHA: it promotes what ranks high among the
    results *so far*, so a grid whose scores trend along its order (a grid is sorted by
    parameter value) would promote most of its configurations. The search's
    ``random_state`` is not advanced (a copy draws the order)."""
    import copy

    from sklearn.utils import check_random_state

    rng = check_random_state(copy.deepcopy(random_state))
    return [configs[i] for i in rng.permutation(len(configs))]


def _sample(space: Space, n: int, random_state: Any) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterSampler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a small grid: checked by the caller
        return [dict(p) for p in ParameterSampler(space.sampler_spec(), n, random_state=random_state)]


def subsampled_splits(
    splits: Sequence[tuple[np.ndarray, np.ndarray]], levels: Sequence[int], n_samples: int, random_state: Any
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[int, int]]:
    """The CV splits followed by a subsampled copy of them per training-set size.

    Each fold keeps ``int(level / n_samples * len(train))`` of its train indices and
    as large a fraction of its test indices, drawn by ``sklearn.utils.resample`` as
    scikit-learn's successive halving does. Returns the splits and, per level, the
    index of its first fold.

    Examples
    --------
    >>> import numpy as np
    >>> splits = [(np.arange(5, 10), np.arange(5)), (np.arange(5), np.arange(5, 10))]
    >>> out, offsets = subsampled_splits(splits, [4], 10, random_state=0)
    >>> offsets, [len(tr) for tr, _ in out]
    ({4: 2}, [5, 5, 2, 2])
    """
    from sklearn.utils import resample

    out = list(splits)
    offsets: dict[int, int] = {}
    for level in levels:
        if level >= n_samples:  # the whole data: the CV folds themselves
            offsets[level] = 0
            continue
        offsets[level] = len(out)
        fraction = level / n_samples
        for train, test in splits:
            sub_train = resample(train, replace=False, random_state=random_state, n_samples=int(fraction * len(train)))
            sub_test = resample(test, replace=False, random_state=random_state, n_samples=int(fraction * len(test)))
            out.append((np.asarray(sub_train), np.asarray(sub_test)))
    return out, offsets


def tag_columns(candidates: Sequence[Candidate], prune: bool) -> dict[str, np.ndarray]:
    """``cv_results_`` columns from the candidates' tags (``iter``, ``n_resources``,
    ``bracket``), and ``pruned`` when pruning was on."""
    names: dict[str, None] = {}
    for cand in candidates:
        names.update(dict.fromkeys(k for k in cand.tags if k != "pruned"))
    columns = {name: np.asarray([cand.tags.get(name) for cand in candidates]) for name in names}
    if prune:
        columns["pruned"] = np.asarray([bool(cand.tags.get("pruned", False)) for cand in candidates])
    return columns


def check_prune(prune: Any) -> PairedPruner | None:
    if prune is False or prune is None:
        return None
    if prune is True:
        return PairedPruner()
    if isinstance(prune, PairedPruner):
        return prune
    raise InvalidParameterError(f"prune must be True, False or a PairedPruner, got {prune!r}")


def search_attributes(strategy: Any, cv_results: Mapping[str, Any], metric: str = "score") -> dict[str, Any]:
    """The strategy's fitted attributes (``n_resources_``, ...) and, for the bracket
    strategies, ``history_`` and ``model_history_`` ranked by ``metric``."""
    attributes = getattr(strategy, "search_attributes", None)
    if attributes is None or not len(cv_results.get("params", ())):
        return {}
    try:
        out = dict(attributes(cv_results))
    except (KeyError, ValueError):  # a partial result without every column
        return {}
    history = getattr(strategy, "history", None)
    if history is not None:
        try:
            out["history_"], out["model_history_"] = history(cv_results, metric)
        except (KeyError, ValueError, IndexError):
            pass
    return out
