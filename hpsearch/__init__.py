"""hpsearch: fast hyperparameter search on one machine and on many.

>>> from hpsearch import run_search, Real
>>> # result = run_search(SVC(), {"C": Real(1e-2, 1e3, prior="log-uniform")}, X, y,
>>> #                     strategy="random", n_iter=20, workers=4)
"""

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
from .scheduler.pruning import PairedPruner
from .space import Categorical, Integer, Real, Space
from .strategies import Candidate, GridStrategy, RandomStrategy, Strategy
from .strategies.halving import HyperbandStrategy, SuccessiveHalvingStrategy
from .workers import LocalProcesses, RemoteWorkers, ThreadWorkers, Worker, WorkerPool

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "Categorical",
    "FitFailedError",
    "FitFailedWarning",
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
    "Real",
    "RemoteWorkers",
    "SearchResult",
    "SearchSpaceError",
    "SerializationError",
    "SuccessiveHalvingStrategy",
    "Space",
    "Strategy",
    "TaskFailedError",
    "ThreadWorkers",
    "VersionMismatchError",
    "Worker",
    "WorkerPool",
    "run_search",
]
