"""Exhaustive grid search, in scikit-learn ``ParameterGrid`` order."""

from __future__ import annotations

from ..errors import SearchSpaceError
from ..space import Space, SpaceSpec
from .base import ListStrategy

__all__ = ["GridStrategy"]


class GridStrategy(ListStrategy):
    """Every point of a grid, once, in scikit-learn's ``ParameterGrid`` order.

    Parameters
    ----------
    space : dict, list of dicts or Space
        Lists, :class:`~hpsearch.Categorical` and :class:`~hpsearch.Integer`
        dimensions; a continuous dimension is refused.

    Examples
    --------
    >>> from hpsearch.strategies import GridStrategy
    >>> s = GridStrategy({"C": [1, 10], "kernel": ["rbf", "linear"]})
    >>> [c.params for c in s.ask(2)]
    [{'C': 1, 'kernel': 'rbf'}, {'C': 1, 'kernel': 'linear'}]
    """

    def __init__(self, space: SpaceSpec) -> None:
        self.space = Space.from_spec(space)
        params = list(self.space.grid())
        if not params:
            raise SearchSpaceError("the grid is empty")
        super().__init__(params)
