"""Search spaces: the one vocabulary every strategy understands.

A user writes a search space the way scikit-learn users already do — a dict of
lists, a list of such dicts, scipy.stats distributions — or with hpsearch's own
dimensions :class:`Real`, :class:`Integer` and :class:`Categorical`, freely mixed.
:meth:`Space.from_spec` normalises any of these into a :class:`Space`: a tuple of
sub-spaces, each an ordered mapping from parameter name to a :class:`Dimension`.
Strategies consume a ``Space`` and never see raw user input.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union, cast

import numpy as np

from .errors import SearchSpaceError

__all__ = ["Dimension", "Real", "Integer", "Categorical", "Distribution", "Space", "SpaceSpec"]

_PRIORS = ("uniform", "log-uniform")


class Dimension:
    """One searchable parameter. Subclasses say how to sample it and how to enumerate it."""

    #: Whether :meth:`grid_values` can enumerate the dimension.
    enumerable: bool = False

    def rvs(self, random_state: np.random.RandomState | np.random.Generator | None = None) -> Any:
        """Draw one value (the scipy.stats ``rvs`` signature, so samplers treat it as a distribution)."""
        raise NotImplementedError

    def grid_values(self) -> list[Any]:
        """Every value of the dimension, in order; only for enumerable dimensions."""
        raise SearchSpaceError(f"{self!r} cannot be enumerated by grid search")

    def __contains__(self, value: Any) -> bool:
        raise NotImplementedError


def _check_prior(prior: str) -> None:
    if prior not in _PRIORS:
        raise SearchSpaceError(f"unknown prior {prior!r}; use one of {list(_PRIORS)}")


def _uniform01(random_state: Any) -> float:
    rng = np.random.mtrand._rand if random_state is None else random_state
    if isinstance(random_state, numbers.Integral):
        rng = np.random.RandomState(int(random_state))
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    return float(rng.uniform())


@dataclass(frozen=True)
class Real(Dimension):
    """A continuous parameter in ``[low, high]``.

    Parameters
    ----------
    low, high : float
        Bounds, ``low < high``.
    prior : {"uniform", "log-uniform"}
        ``"log-uniform"`` samples ``log(value)`` uniformly, for scale parameters such
        as a regularisation strength; it needs ``low > 0``.

    Examples
    --------
    >>> from hpsearch import Real
    >>> c = Real(1e-3, 1e3, prior="log-uniform")
    >>> 1.0 in c
    True
    """

    low: float
    high: float
    prior: str = "uniform"

    def __post_init__(self) -> None:
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise SearchSpaceError(f"Real: {bound} must be a finite number, got {value!r}")
        if self.low >= self.high:
            raise SearchSpaceError(
                f"Real: low must be smaller than high, got low={self.low!r}, high={self.high!r}"
            )
        _check_prior(self.prior)
        if self.prior == "log-uniform" and self.low <= 0:
            raise SearchSpaceError(
                f"Real: a log-uniform prior needs low > 0, got low={self.low!r}; "
                "use prior='uniform' or a positive lower bound"
            )

    def rvs(self, random_state: Any = None) -> float:
        u = _uniform01(random_state)
        if self.prior == "log-uniform":
            lo, hi = math.log(self.low), math.log(self.high)
            return float(min(self.high, max(self.low, math.exp(lo + u * (hi - lo)))))
        return float(self.low + u * (self.high - self.low))

    def __contains__(self, value: Any) -> bool:
        return isinstance(value, numbers.Real) and self.low <= float(value) <= self.high


@dataclass(frozen=True)
class Integer(Dimension):
    """An integer parameter in ``[low, high]``, both ends included.

    Grid search enumerates every integer in the range; random and Bayesian search
    sample it (log-uniformly with ``prior="log-uniform"``). Values are Python ints.

    Examples
    --------
    >>> from hpsearch import Integer
    >>> Integer(1, 4).grid_values()
    [1, 2, 3, 4]
    """

    low: int
    high: int
    prior: str = "uniform"
    enumerable = True

    def __post_init__(self) -> None:
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise SearchSpaceError(f"Integer: {bound} must be an integer, got {value!r}")
            object.__setattr__(self, bound, int(value))
        if self.low >= self.high:
            raise SearchSpaceError(
                f"Integer: low must be smaller than high, got low={self.low!r}, high={self.high!r}; "
                "for a single value use a list, e.g. [3]"
            )
        _check_prior(self.prior)
        if self.prior == "log-uniform" and self.low <= 0:
            raise SearchSpaceError(
                f"Integer: a log-uniform prior needs low > 0, got low={self.low!r}"
            )

    def rvs(self, random_state: Any = None) -> int:
        u = _uniform01(random_state)
        if self.prior == "log-uniform":
            lo, hi = math.log(self.low), math.log(self.high + 1)
            value = math.floor(math.exp(lo + u * (hi - lo)))
        else:
            value = self.low + math.floor(u * (self.high - self.low + 1))
        return int(min(self.high, max(self.low, value)))

    def grid_values(self) -> list[int]:
        return list(range(self.low, self.high + 1))

    def __contains__(self, value: Any) -> bool:
        return (
            isinstance(value, numbers.Integral)
            and not isinstance(value, bool)
            and self.low <= int(value) <= self.high
        )


@dataclass(frozen=True, init=False)
class Categorical(Dimension):
    """A parameter that takes one of a fixed set of values (any Python objects).

    A plain list in a search space means the same thing.

    Examples
    --------
    >>> from hpsearch import Categorical
    >>> Categorical(["rbf", "linear"]).grid_values()
    ['rbf', 'linear']
    """

    choices: tuple
    enumerable = True

    def __init__(self, choices: Sequence[Any]) -> None:
        if isinstance(choices, (str, bytes)) or not isinstance(choices, (Sequence, np.ndarray)):
            raise SearchSpaceError(
                f"Categorical: choices must be a list of values, got {choices!r}"
            )
        if isinstance(choices, np.ndarray) and choices.ndim != 1:
            raise SearchSpaceError(
                f"Categorical: choices must be one-dimensional, got an array of shape {choices.shape}"
            )
        values = tuple(_plain(v) for v in choices)
        if not values:
            raise SearchSpaceError("Categorical: choices must not be empty")
        object.__setattr__(self, "choices", values)

    def rvs(self, random_state: Any = None) -> Any:
        u = _uniform01(random_state)
        return self.choices[min(len(self.choices) - 1, int(u * len(self.choices)))]

    def grid_values(self) -> list[Any]:
        return list(self.choices)

    def __contains__(self, value: Any) -> bool:
        return any(value is c or _equal(value, c) for c in self.choices)


@dataclass(frozen=True)
class Distribution(Dimension):
    """Any object with an ``rvs`` method, such as a frozen ``scipy.stats`` distribution.

    Random search samples it exactly as scikit-learn's ``ParameterSampler`` does.
    Grid search refuses it; Bayesian search accepts ``uniform`` and ``loguniform``.
    """

    dist: Any

    def __post_init__(self) -> None:
        if not callable(getattr(self.dist, "rvs", None)):
            raise SearchSpaceError(
                f"Distribution: {self.dist!r} has no rvs() method; "
                "pass a scipy.stats distribution or a list of values"
            )

    def rvs(self, random_state: Any = None) -> Any:
        return _plain(self.dist.rvs(random_state=random_state))

    def __contains__(self, value: Any) -> bool:
        support = getattr(self.dist, "support", None)
        if support is None:
            return True
        low, high = support()
        return isinstance(value, numbers.Real) and low <= value <= high

    def as_real(self) -> Real | None:
        """The equivalent :class:`Real`, for ``scipy.stats`` ``uniform`` and ``loguniform``.

        Returns None for any other distribution (and for a ``loguniform`` shifted by
        ``loc``, which is no longer log-uniform). Bayesian search uses this to accept
        the distributions it can model exactly.

        Examples
        --------
        >>> from scipy.stats import loguniform
        >>> Distribution(loguniform(1e-3, 1e2)).as_real()
        Real(low=0.001, high=100.0, prior='log-uniform')
        """
        frozen = getattr(self.dist, "dist", None)
        name = getattr(frozen, "name", None)
        if frozen is None or name not in ("uniform", "loguniform", "reciprocal"):
            return None
        try:  # scipy's own argument parsing: positional or keyword loc/scale alike
            shapes, loc, scale = frozen._parse_args(*self.dist.args, **self.dist.kwds)
        except Exception:
            return None
        if name == "uniform":
            return Real(float(loc), float(loc + scale))
        if loc != 0:
            return None
        low, high = shapes
        return Real(float(low * scale), float(high * scale), prior="log-uniform")

    def __repr__(self) -> str:
        name = getattr(getattr(self.dist, "dist", None), "name", type(self.dist).__name__)
        args = getattr(self.dist, "args", ())
        return f"Distribution({name}{tuple(args)!r})"


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars, so candidates hold ints, floats, strs."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other objects without a plain truth value
        return False


SpaceSpec = Union["Space", Mapping[str, Any], Sequence[Mapping[str, Any]]]


def _to_dimension(name: str, value: Any) -> Dimension:
    if isinstance(value, Dimension):
        return value
    if hasattr(value, "rvs"):
        return Distribution(value)
    if isinstance(value, (str, bytes)):
        raise SearchSpaceError(
            f"parameter {name!r}: got the string {value!r}; a search space maps each "
            f"parameter to a list of values, e.g. {{{name!r}: [{value!r}]}}"
        )
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise SearchSpaceError(
            f"parameter {name!r}: an array of values must be one-dimensional, got shape {value.shape}"
        )
    if isinstance(value, (Sequence, np.ndarray)):
        if len(value) == 0:
            raise SearchSpaceError(
                f"parameter {name!r}: the list of values is empty; give at least one value"
            )
        return Categorical(cast(Sequence[Any], value))  # an array is a sequence too
    raise SearchSpaceError(
        f"parameter {name!r}: {value!r} ({type(value).__name__}) is not a search dimension; "
        f"use a list of values (e.g. [{value!r}]), Real/Integer/Categorical, or a "
        "distribution with an rvs() method"
    )


@dataclass(frozen=True)
class Space:
    """A normalised search space: one or more sub-spaces of named dimensions.

    Most users never build one: every strategy and :func:`hpsearch.run_search`
    accept the raw spec and call :meth:`from_spec`.

    Examples
    --------
    >>> from hpsearch import Space, Real
    >>> space = Space.from_spec({"C": Real(0.1, 10), "kernel": ["rbf", "linear"]})
    >>> space.names
    ['C', 'kernel']
    >>> space.grid_size is None  # a Real cannot be enumerated
    True
    """

    subspaces: tuple[dict[str, Dimension], ...]

    @classmethod
    def from_spec(cls, spec: SpaceSpec) -> Space:
        """Normalise a user's search space (dict, list of dicts, or ``Space``)."""
        if isinstance(spec, Space):
            return spec
        if isinstance(spec, Mapping):
            specs: list[Mapping[str, Any]] = [spec]
        elif isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
            specs = list(spec)
            if not specs:
                raise SearchSpaceError("the search space is an empty list; give at least one dict")
        else:
            raise SearchSpaceError(
                f"a search space must be a dict of parameter -> values or a list of such dicts, "
                f"got {type(spec).__name__}"
            )
        subspaces = []
        for i, sub in enumerate(specs):
            if not isinstance(sub, Mapping):
                raise SearchSpaceError(
                    f"sub-space {i} of the search space must be a dict, got {type(sub).__name__}: {sub!r}"
                )
            for name in sub:
                if not isinstance(name, str):
                    raise SearchSpaceError(f"parameter names must be strings, got {name!r}")
            # Sorted like scikit-learn's ParameterGrid/ParameterSampler, so that
            # candidate order and sampling match theirs.
            subspaces.append({name: _to_dimension(name, sub[name]) for name in sorted(sub)})
        return cls(tuple(subspaces))

    @property
    def names(self) -> list[str]:
        """Every parameter name, in order of first appearance."""
        seen: dict[str, None] = {}
        for sub in self.subspaces:
            seen.update(dict.fromkeys(sub))
        return list(seen)

    @property
    def grid_size(self) -> int | None:
        """Number of grid points, or None when a dimension cannot be enumerated."""
        total = 0
        for sub in self.subspaces:
            if not all(d.enumerable for d in sub.values()):
                return None
            total += math.prod(len(d.grid_values()) for d in sub.values())
        return total

    def check_grid(self) -> None:
        """Raise a clear error when some dimension cannot be enumerated by grid search."""
        for sub in self.subspaces:
            for name, dim in sub.items():
                if not dim.enumerable:
                    raise SearchSpaceError(
                        f"grid search cannot enumerate parameter {name!r} = {dim!r}: it is continuous. "
                        "Give a list of values instead, or use strategy='random' or 'bayes'"
                    )

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every grid point, in scikit-learn ``ParameterGrid`` order."""
        from sklearn.model_selection import ParameterGrid

        self.check_grid()
        return iter(ParameterGrid([{n: d.grid_values() for n, d in sub.items()} for sub in self.subspaces]))

    def for_bayes(self) -> Space:
        """This space with only :class:`Real`, :class:`Integer` and :class:`Categorical`.

        ``scipy.stats`` ``uniform`` and ``loguniform`` become a :class:`Real`; any
        other distribution, which a surrogate model cannot represent, is refused.
        """
        subspaces = []
        for sub in self.subspaces:
            converted: dict[str, Dimension] = {}
            for name, dim in sub.items():
                if isinstance(dim, (Real, Integer, Categorical)):
                    converted[name] = dim
                    continue
                real = dim.as_real() if isinstance(dim, Distribution) else None
                if real is None:
                    raise SearchSpaceError(
                        f"Bayesian search cannot use parameter {name!r} = {dim!r}: it supports "
                        "Real, Integer, Categorical, lists of values and scipy.stats uniform / "
                        "loguniform. Use Real(low, high, prior=...), Integer(low, high) or a list, "
                        "or strategy='random' to sample this distribution"
                    )
                converted[name] = real
            subspaces.append(converted)
        return Space(tuple(subspaces))

    def sampler_spec(self) -> list[dict[str, Any]]:
        """The space as scikit-learn ``ParameterSampler`` input: lists and ``rvs`` objects."""
        return [
            {n: (list(d.choices) if isinstance(d, Categorical) else d) for n, d in sub.items()}
            for sub in self.subspaces
        ]

    def __contains__(self, params: Mapping[str, Any]) -> bool:
        return any(
            set(params) == set(sub) and all(params[n] in d for n, d in sub.items())
            for sub in self.subspaces
        )
