"""scikit-learn's estimator parameter names, looked up once per class in a worker process.

Every task clones the search's estimator and sets the candidate's params:
``clone`` calls ``get_params`` on the template and on the new object, and
``set_params`` calls it once more. Each ``get_params`` asks
``BaseEstimator._get_param_names``, which reads the constructor's signature with
``inspect.signature`` (about 20 µs each): on a no-op fit that is more than half of
the task's cost in a worker. The names depend only on the class's ``__init__``,
so :func:`install` makes ``_get_param_names`` keep them per ``(class, __init__)``
for the rest of the process.

Only ``hpsearch-worker`` processes install it (:func:`hpsearch.worker_cli.main`):
they run nothing but hpsearch's tasks, while a user's own process keeps
scikit-learn untouched. What the cache returns is what scikit-learn computes:

* the first call of a class runs scikit-learn's own method, and its answer is kept
  (a class whose constructor takes ``*args`` raises its ``RuntimeError`` every
  time, never cached);
* the key holds the constructor itself and its ``__signature__``, so a class whose
  ``__init__`` is replaced or re-signed afterwards is looked up again;
* classes that define their own ``_get_param_names``, or a ``get_params`` that does
  not call it, are not affected at all;
* each caller gets a fresh list, as from scikit-learn.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["install", "installed", "uninstall"]

#: at most this many classes are kept (classes made per task would otherwise pile up)
MAX_CLASSES = 4096

_lock = threading.Lock()
_original: Any = None  # scikit-learn's classmethod, once installed
_names: dict[tuple[Any, ...], tuple[str, ...]] = {}


def _cached_param_names(cls: Any) -> list[str]:
    init = cls.__init__  # what scikit-learn reads (``cls.__init__``)
    key = (cls, init, getattr(init, "__signature__", None))
    names = _names.get(key)
    if names is None:
        names = tuple(_original.__func__(cls))
        if len(_names) >= MAX_CLASSES:
            _names.clear()
        _names[key] = names
    return list(names)


def install() -> None:
    """Cache ``BaseEstimator._get_param_names`` per class in this process (idempotent).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> install()
    >>> installed()
    True
    >>> LogisticRegression._get_param_names() == sorted(LogisticRegression().get_params())
    True
    >>> uninstall()
    >>> installed()
    False
    """
    global _original
    from sklearn.base import BaseEstimator

    with _lock:
        if _original is not None:
            return
        _original = BaseEstimator.__dict__["_get_param_names"]
        BaseEstimator._get_param_names = classmethod(_cached_param_names)


def installed() -> bool:
    """Whether :func:`install` ran in this process."""
    return _original is not None


def uninstall() -> None:
    """Give ``BaseEstimator`` scikit-learn's own ``_get_param_names`` back, and forget
    the names kept (idempotent)."""
    global _original
    from sklearn.base import BaseEstimator

    with _lock:
        if _original is None:
            return
        BaseEstimator._get_param_names = _original
        _original = None
        _names.clear()
