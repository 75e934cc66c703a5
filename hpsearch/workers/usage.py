"""Which pools a search is using: one search per pool at a time, each pool listed once.

A pool serves one search at a time (it ships that search's context to its workers
and reports to that search alone), so a second search started on a pool that is
busy, from another thread, is refused at once with a clear error rather than
taking the workers from under the first; the same pool listed twice in one search
is refused too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import InvalidParameterError

__all__ = ["claim_pools"]

_lock = threading.Lock()
_busy: set[int] = set()  # id() of the pools that a search is using now


@contextlib.contextmanager
def claim_pools(pools: Sequence[Any]) -> Iterator[None]:
    """Mark ``pools`` as used by one search for the duration of the ``with`` block.

    Raises
    ------
    InvalidParameterError
        When a pool is listed twice, or another search is using one of them.

    Examples
    --------
    >>> from hpsearch import ThreadWorkers
    >>> pool = ThreadWorkers(1)
    >>> with claim_pools([pool]):
    ...     with claim_pools([pool]):  # doctest: +ELLIPSIS
    ...         pass
    Traceback (most recent call last):
    ...
    hpsearch.errors.InvalidParameterError: ThreadWorkers(1) is serving another search ...
    """
    seen: set[int] = set()
    for pool in pools:
        if id(pool) in seen:
            raise InvalidParameterError(
                f"workers lists the pool {pool!r} twice; list each pool once (its workers are "
                "all used either way)"
            )
        seen.add(id(pool))
    with _lock:
        for pool in pools:
            if id(pool) in _busy:
                raise InvalidParameterError(
                    f"{pool!r} is serving another search right now; a pool serves one search at "
                    "a time. Wait for that search to end, or give this one its own pool"
                )
        _busy.update(seen)
    try:
        yield
    finally:
        with _lock:
            _busy.difference_update(seen)
