"""The exceptions hpsearch raises.

Every error hpsearch raises on purpose derives from :class:`HPSearchError`, so
``except hpsearch.HPSearchError`` catches them all. Errors about bad input also
derive from the type scikit-learn raises for the same mistake, so existing
``except ValueError`` code keeps working. Where scikit-learn has the behaviour
(the search estimators, and ``run_search`` built on them), its own exceptions and
warnings are raised as they are::

    HPSearchError
    ├── SearchSpaceError (ValueError)     a search space that cannot be searched
    ├── InvalidParameterError             a bad argument to run_search or a strategy
    │     (sklearn.utils._param_validation.InvalidParameterError: ValueError, TypeError)
    ├── FitFailedError (ValueError)       every fit of the search failed
    ├── TaskFailedError                   a task killed the workers that ran it, 3 times
    ├── NoWorkersError                    no worker joined in time / all workers are gone
    ├── SerializationError (ValueError)   an object that cannot be pickled, or frames that cannot be decoded
    ├── ProtocolError                     a wire-protocol violation
    │   └── VersionMismatchError          a worker and master that cannot work together
    └── MissingDependencyError (ImportError) an optional extra is not installed

Warnings:

    FitFailedWarning   scikit-learn's (``sklearn.exceptions.FitFailedWarning``): some
                       (not all) fits failed; their scores are ``error_score``
"""

from __future__ import annotations

from sklearn.exceptions import FitFailedWarning
from sklearn.utils._param_validation import InvalidParameterError as _SklearnInvalidParameterError

__all__ = [
    "HPSearchError",
    "SearchSpaceError",
    "InvalidParameterError",
    "FitFailedError",
    "FitFailedWarning",
    "TaskFailedError",
    "NoWorkersError",
    "SerializationError",
    "ProtocolError",
    "VersionMismatchError",
    "MissingDependencyError",
]


class HPSearchError(Exception):
    """Base class of every error hpsearch raises on purpose."""


class SearchSpaceError(HPSearchError, ValueError):
    """A search space that is empty, degenerate, or unusable by the chosen strategy."""


class InvalidParameterError(HPSearchError, _SklearnInvalidParameterError):
    """A bad argument: the message names the argument, its value and what is allowed."""


class FitFailedError(HPSearchError, ValueError):
    """Every fit of the search failed; the message carries the first traceback."""


class TaskFailedError(HPSearchError):
    """A task whose worker died while running it too many times (a poison task)."""


class NoWorkersError(HPSearchError):
    """No worker is available to run the search."""


class SerializationError(HPSearchError, ValueError):
    """An object that cannot be pickled, or frames that cannot be turned back into one
    (truncated, corrupt, unknown format)."""


class ProtocolError(HPSearchError):
    """A message that breaks the hpsearch wire protocol."""


class VersionMismatchError(ProtocolError):
    """A worker and a master whose versions cannot work together."""


class MissingDependencyError(HPSearchError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
