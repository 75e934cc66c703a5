"""Durable searches: an SQLite journal that a rerun resumes from.

``run_search(..., storage="search.db", name="svc")``, or ``storage=`` and ``name=`` on
any search class (``GridSearchCV(..., storage="search.db")``), records the search in
the file as it runs: its definition, every candidate the strategy proposed and every
fold result.
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
    "check_storage",
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
    random_state: Any,
    *,
    seed: int | None = None,
) -> SearchJournal:
    """The journal of the search a search estimator's ``fit`` is about to run.

    ``strategy`` is the text that names the strategy and its settings (``"grid"``,
    ``"random(n_iter=10)"``), or the strategy object itself; ``space`` has
    ``subspaces`` (a :class:`~hpsearch.Space`). ``seed``: the seed the search draws
    from in place of ``random_state=None`` (see :func:`stored_seed`), stored with a
    new search and checked against a stored one. Raises :class:`StorageError` (before
    any fit) when the file cannot be used or holds another search under ``name``.
    """
    definition = search_definition(context, space, strategy, random_state)
    return open_journal(storage, name, definition, n_splits=context.n_splits, seeded=seed is not None, seed=seed)


def check_storage(storage: Any, name: str | None) -> None:
    """Raise :class:`StorageError` if ``storage`` and ``name`` cannot hold a search.

    The checks a search runs before anything else (no file is created): the path is a
    file in an existing, writable directory, an existing file is an hpsearch storage
    file (not corrupt, not another program's), and ``name`` is a non-empty string or
    None.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> check_storage(os.path.join(folder, "search.db"), "svc")  # a new file: nothing to say
    >>> check_storage(folder, "svc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    hpsearch.storage._db.StorageError: storage path ... is a directory; give the path of a file inside it, ...
    """
    import sqlite3

    from ._db import _check_format, _check_writable, _describe_error, check_path

    if name is not None and (not isinstance(name, str) or not name):
        raise StorageError(f"name must be a non-empty string (or None for {DEFAULT_NAME!r}), got {name!r}")
    path = check_path(storage)
    _check_writable(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            _check_format(conn, path)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(_describe_error(path, exc)) from None


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
