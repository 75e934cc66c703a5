"""hpsearch: fast hyperparameter search on one machine and on many.

>>> from hpsearch import GridSearchCV, run_search, Real
>>> # search = GridSearchCV(SVC(), {"C": [0.1, 1, 10]}, workers=4).fit(X, y)
>>> # result = run_search(SVC(), {"C": Real(1e-2, 1e3, prior="log-uniform")}, X, y,
>>> #                     strategy="random", n_iter=20, workers=4)
"""

import typing as _typing

from . import joblib_backend as _joblib_backend  # registers the "hpsearch" joblib backend
from .adaptive_cv import HalvingGridSearchCV, HalvingRandomSearchCV, HyperbandSearchCV
from .api import run_search
from .errors import (
    FitFailedError,
    FitFailedWarning,
    HPSearchError,
    InvalidParameterError,
    MissingDependencyError,
    NoWorkersError,
    ProtocolError,
    SearchSpaceError,
    SerializationError,
    TaskFailedError,
    VersionMismatchError,
)
from .results import SearchResult
from .search_cv import BayesSearchCV, GridSearchCV, RandomizedSearchCV
from .scheduler.pruning import PairedPruner
from .space import Categorical, Integer, Real, Space
from .storage import StorageError
from .strategies import Candidate, GridStrategy, RandomStrategy, Strategy
from .strategies.halving import HyperbandStrategy, SuccessiveHalvingStrategy
from .workers import (
    AutoWorkers,
    LocalProcesses,
    RemoteWorkers,
    ThreadWorkers,
    Worker,
    WorkerPool,
    warm_processes,
)

if _typing.TYPE_CHECKING:
    from .workers import DaskWorkers


def __getattr__(name: str) -> _typing.Any:
    """``DaskWorkers``, imported on first use (Dask's ``distributed`` is slow to import and
    worker processes never need it)."""
    if name == "DaskWorkers":
        from .workers.dask import DaskWorkers

        return DaskWorkers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "DaskWorkers"})


__version__ = "0.1.0"

__all__ = [
    "AutoWorkers",
    "BayesSearchCV",
    "Candidate",
    "Categorical",
    "DaskWorkers",
    "FitFailedError",
    "FitFailedWarning",
    "GridSearchCV",
    "GridStrategy",
    "HPSearchError",
    "HalvingGridSearchCV",
    "HalvingRandomSearchCV",
    "HyperbandSearchCV",
    "HyperbandStrategy",
    "Integer",
    "InvalidParameterError",
    "LocalProcesses",
    "MissingDependencyError",
    "NoWorkersError",
    "PairedPruner",
    "ProtocolError",
    "RandomStrategy",
    "RandomizedSearchCV",
    "Real",
    "RemoteWorkers",
    "SearchResult",
    "SearchSpaceError",
    "SerializationError",
    "SuccessiveHalvingStrategy",
    "Space",
    "StorageError",
    "Strategy",
    "TaskFailedError",
    "ThreadWorkers",
    "VersionMismatchError",
    "Worker",
    "WorkerPool",
    "run_search",
    "warm_processes",
]
