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

import os
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
    "stored_seed",
]


def open_search_journal(
    storage: Any,
    name: str | None,
    context: Any,
    space: Any,
    strategy: Any,
    n_iter: int,
    random_state: Any,
    *,
    seed: int | None = None,
) -> SearchJournal:
    """The journal of the search that :func:`hpsearch.run_search` is about to run.

    Raises :class:`StorageError` (before any fit) when the file cannot be used or holds
    another search under ``name``. ``seed``: the seed the search draws from in place of
    ``random_state=None`` (see :func:`stored_seed`), stored with a new search.
    """
    definition = search_definition(context, space, strategy, n_iter, random_state)
    seeded = isinstance(strategy, str) and strategy in ("random", "bayes") and random_state is None
    return open_journal(storage, name, definition, n_splits=context.n_splits, seeded=seeded, seed=seed)


def stored_seed(storage: Any, name: str | None) -> int | None:
    """The seed stored with search ``name`` in ``storage`` for ``random_state=None``;
    None when there is no such search yet (or the file cannot be read: opening the
    journal then reports why, before any fit)."""
    import sqlite3
    from pathlib import Path

    path = Path(os.fspath(storage))
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT seed FROM searches WHERE name=?", (DEFAULT_NAME if name is None else name,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else int(row[0])
