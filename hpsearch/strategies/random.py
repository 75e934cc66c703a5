"""Random search, with scikit-learn ``ParameterSampler`` semantics."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..space import Space, SpaceSpec
from .base import ListStrategy, check_n_iter

__all__ = ["RandomStrategy"]


class RandomStrategy(ListStrategy):
    """``n_iter`` candidates sampled from the space.

    When every dimension is a list, points are drawn without replacement and
    ``n_iter`` is capped at the grid size (with a warning); otherwise each
    candidate draws every dimension independently. The same ``random_state``
    gives the same candidates as scikit-learn's ``RandomizedSearchCV``.

    Parameters
    ----------
    space : dict, list of dicts or Space
    n_iter : int
        Number of candidates, at least 1.
    random_state : int, numpy RandomState or None
        Seed; None draws from a generator of the strategy's own, seeded by the
        operating system (numpy's global random state is left alone).

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from hpsearch.strategies import RandomStrategy
    >>> s = RandomStrategy({"C": loguniform(1e-2, 1e2)}, n_iter=3, random_state=0)
    >>> len(s.ask(10)), s.finished
    (3, True)
    """

    def __init__(self, space: SpaceSpec, n_iter: int = 10, random_state: Any = None) -> None:
        from sklearn.model_selection import ParameterSampler

        self.space = Space.from_spec(space)
        self.n_iter = check_n_iter(n_iter)
        grid_size = self.space.grid_size
        if grid_size is not None and self.n_iter > grid_size:
            warnings.warn(
                f"n_iter={self.n_iter} is greater than the {grid_size} points of the search "
                f"space; running {grid_size} candidates",
                UserWarning,
                stacklevel=2,
            )
        if random_state is None:
            # A generator of its own, seeded from the OS: numpy's global random state is
            # neither read nor advanced (scikit-learn's samplers would use it).
            random_state = np.random.RandomState()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the cap warning, given above
            sampler = ParameterSampler(self.space.sampler_spec(), self.n_iter, random_state=random_state)
            params = [dict(p) for p in sampler]
        super().__init__(params)
