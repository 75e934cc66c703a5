"""hpsearch: fast hyperparameter search on one machine and on many.

>>> from hpsearch import GridSearchCV, run_search, Real
>>> # search = GridSearchCV(SVC(), {"C": [0.1, 1, 10]}, workers=4).fit(X, y)
>>> # result = run_search(SVC(), {"C": Real(1e-2, 1e3, prior="log-uniform")}, X, y,
>>> #                     strategy="random", n_iter=20, workers=4)
"""

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
    DaskWorkers,
    LocalProcesses,
    RemoteWorkers,
    ThreadWorkers,
    Worker,
    WorkerPool,
    warm_processes,
)

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
