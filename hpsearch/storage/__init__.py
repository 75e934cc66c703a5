"""Durable searches: an SQLite journal that a rerun resumes from.

``run_search(..., storage="search.db", name="svc")`` records the search in the file as
it runs: its definition, every candidate the strategy proposed and every fold result.
If the process running the search dies, rerunning the same call resumes it: the
strategy is brought back to the state it had, finished fits are not run again, and
the final ``cv_results_`` equal those of a run that was never interrupted. One file
holds several searches (by name); a call whose definition (estimator, space,
strategy and seed, CV splits, data, scoring) differs from the one stored under its
name is refused, with the differences, before any fit.

``hpsearch status search.db`` prints a table of the searches in a file and
``hpsearch dashboard search.db`` serves a live web page of them;
:func:`load_search` reads one back for :mod:`hpsearch.plot`.

Examples
--------
>>> import tempfile, os
>>> from sklearn.datasets import load_iris
>>> from sklearn.tree import DecisionTreeClassifier
>>> from hpsearch import run_search
>>> from hpsearch.storage import load_search
>>> X, y = load_iris(return_X_y=True)
>>> path = os.path.join(tempfile.mkdtemp(), "search.db")
>>> first = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 2, 3]},
...                    X, y, cv=3, storage=path, name="tree", progress=False)
>>> again = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 2, 3]},
...                    X, y, cv=3, storage=path, name="tree", progress=False)  # nothing refit
>>> again.best_params_ == first.best_params_
True
>>> stored = load_search(path, "tree")
>>> stored.status, stored.candidates_done, stored.tasks_done
('finished', 3, 9)
"""

from __future__ import annotations

from typing import Any

from ._db import StorageError
from .journal import DEFAULT_NAME, SearchJournal, open_journal, search_definition
from .read import StoredSearch, list_searches, load_search

__all__ = [
    "DEFAULT_NAME",
    "SearchJournal",
    "StorageError",
    "StoredSearch",
    "list_searches",
    "load_search",
    "open_search_journal",
]


def open_search_journal(
    storage: Any, name: str | None, context: Any, space: Any, strategy: Any, n_iter: int, random_state: Any
) -> SearchJournal:
    """The journal of the search that :func:`hpsearch.run_search` is about to run.

    Raises :class:`StorageError` (before any fit) when the file cannot be used or holds
    another search under ``name``.
    """
    definition = search_definition(context, space, strategy, n_iter, random_state)
    seeded = isinstance(strategy, str) and strategy in ("random", "bayes") and random_state is None
    return open_journal(storage, name, definition, n_splits=context.n_splits, seeded=seeded)
