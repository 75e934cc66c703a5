"""Reading a storage file: what ``hpsearch status``, the dashboard and the plots show.

Everything here opens the file read-only, so it can run while a search writes it
(SQLite's WAL mode), from another process or another machine sharing the disk.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._db import StorageError, connect_reader

__all__ = ["StoredSearch", "load_search", "list_searches"]

#: A run whose heartbeat is older than this is taken as dead (its process was killed).
STALE_AFTER_S = 30.0


@dataclass
class StoredSearch:
    """One search as stored: progress, candidates, fold results, workers.

    Attributes
    ----------
    name : str
    status : str
        ``"running"``, ``"finished"``, ``"failed"``, ``"interrupted"`` (Ctrl-C, or
        the process died: resume it by running the same call again), or ``"new"``.
    n_splits : int
    total : int or None
        Candidates the strategy will propose, when known.
    score_key : str
        The score the strategy maximises (``mean_test_<score_key>``).
    candidates : list of dict
        ``id``, ``params``, ``score`` (mean test score, None until every fold is
        done or when it is NaN), ``done`` (time its last fold finished), ``failed``.
    tasks : list of dict
        Per fold result: ``candidate``, ``fold``, ``worker``, ``start``, ``end``
        (wall-clock seconds; start is end less fit and score time), ``error``.
    workers : list of dict
        ``name``, ``slots``, ``joined``, ``lost``, ``reason``, ``run``.
    runs : list of dict
        ``id``, ``started``, ``ended``, ``status``, ``error``, ``pid``, ``host``.
    """

    name: str
    status: str
    n_splits: int
    total: int | None
    score_key: str
    created: float
    candidates: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def candidates_done(self) -> int:
        return sum(1 for c in self.candidates if c["done"] is not None)

    @property
    def tasks_done(self) -> int:
        return len(self.tasks)

    @property
    def tasks_total(self) -> int | None:
        return None if self.total is None else self.total * self.n_splits

    @property
    def best(self) -> dict[str, Any] | None:
        """The completed candidate with the highest score (lowest id among ties)."""
        scored = [c for c in self.candidates if c["score"] is not None]
        return max(scored, key=lambda c: (c["score"], -c["id"])) if scored else None

    @property
    def elapsed(self) -> float:
        """Seconds the search has run, over all its runs."""
        now = time.time()
        total = 0.0
        for run in self.runs:
            end = run["ended"] or (now if run["status"] == "running" else run["heartbeat"])
            total += max(0.0, end - run["started"])
        return total

    @property
    def param_names(self) -> list[str]:
        names: dict[str, None] = {}
        for c in self.candidates:
            names.update(dict.fromkeys(c["params"]))
        return list(names)

    def plot(self, kind: str = "best", **kwargs: Any) -> Any:
        """Plot it (needs matplotlib); see :func:`hpsearch.plot.plot`."""
        from .. import plot

        return plot.plot(self, kind, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary and the full tables (NaN as None)."""
        best = self.best
        return {
            "name": self.name,
            "status": self.status,
            "n_splits": self.n_splits,
            "total": self.total,
            "score_key": self.score_key,
            "created": self.created,
            "elapsed": self.elapsed,
            "candidates_done": self.candidates_done,
            "candidates_proposed": len(self.candidates),
            "tasks_done": self.tasks_done,
            "tasks_total": self.tasks_total,
            "n_failures": len(self.failures),
            "best_score": None if best is None else best["score"],
            "best_params": None if best is None else best["params"],
            "best_id": None if best is None else best["id"],
            "param_names": self.param_names,
            "workers": self.workers,
            "runs": self.runs,
            "candidates": self.candidates,
            "tasks": self.tasks,
            "failures": self.failures,
        }


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not values or len(finite) < len(values):
        return None
    return float(np.mean(finite))  # as cv_results_ computes mean_test_*


def _status(run: dict[str, Any] | None) -> str:
    if run is None:
        return "new"
    if run["status"] != "running":
        return str(run["status"])
    if run["host"] == socket.gethostname():
        try:
            os.kill(run["pid"], 0)
        except ProcessLookupError:
            return "interrupted"
        except PermissionError:
            pass  # alive, another user's
    if time.time() - run["heartbeat"] > STALE_AFTER_S:
        return "interrupted"
    return "running"


def _load(conn: Any, row: Any) -> StoredSearch:
    sid, n_splits = row["id"], row["n_splits"]
    score_key = row["score_key"] or "score"
    runs = [dict(r) for r in conn.execute(
        "SELECT id, started, heartbeat, ended, status, error, pid, host FROM runs WHERE search_id=? ORDER BY id",
        (sid,),
    )]
    search = StoredSearch(
        name=row["name"], status=_status(runs[-1] if runs else None), n_splits=n_splits,
        total=row["total"], score_key=score_key, created=row["created"], runs=runs,
    )
    search.workers = [dict(r) for r in conn.execute(
        "SELECT name, slots, joined, lost, reason, run_id AS run FROM workers WHERE search_id=? ORDER BY joined",
        (sid,),
    )]
    folds: dict[int, list[tuple[float, float | None, bool]]] = {}
    for r in conn.execute(
        "SELECT candidate_id, fold, worker, finished, fit_time, score_time, test_scores, error "
        "FROM results WHERE search_id=? ORDER BY finished",
        (sid,),
    ):
        scores = json.loads(r["test_scores"])
        score = scores.get(score_key)
        failed = r["error"] is not None
        search.tasks.append({
            "candidate": r["candidate_id"], "fold": r["fold"], "worker": r["worker"],
            "start": r["finished"] - r["fit_time"] - r["score_time"], "end": r["finished"],
            "score": score if score is not None and math.isfinite(score) else None, "error": failed,
        })
        folds.setdefault(r["candidate_id"], []).append((r["finished"], score, failed))
        if failed:
            search.failures.append({
                "candidate": r["candidate_id"], "fold": r["fold"], "worker": r["worker"],
                "time": r["finished"], "error": r["error"],
            })
    for r in conn.execute(
        "SELECT candidate_id, params, proposed FROM candidates WHERE search_id=? ORDER BY candidate_id", (sid,)
    ):
        got = folds.get(r["candidate_id"], [])
        complete = len(got) == n_splits
        search.candidates.append({
            "id": r["candidate_id"],
            "params": json.loads(r["params"]),
            "proposed": r["proposed"],
            "score": _mean([s for _, s, _ in got]) if complete else None,
            "done": max(t for t, _, _ in got) if complete else None,
            "failed": any(f for _, _, f in got),
            "folds_done": len(got),
        })
    return search


def load_search(storage: Any, name: str | None = None) -> StoredSearch:
    """Read one search from a storage file (the only one, or ``name``).

    Examples
    --------
    >>> search = load_search("search.db", "svc")  # doctest: +SKIP
    >>> search.status, search.candidates_done, search.best["params"]  # doctest: +SKIP
    ('running', 12, {'C': 10.0})
    """
    _, conn = connect_reader(storage)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM searches ORDER BY id")]
        if name is None:
            if len(names) != 1:
                raise StorageError(
                    f"storage file {str(storage)!r} holds {len(names)} searches {names}; pass name= to choose one"
                )
            name = names[0]
        row = conn.execute("SELECT * FROM searches WHERE name=?", (name,)).fetchone()
        if row is None:
            raise StorageError(f"no search named {name!r} in {str(storage)!r}; it holds {names}")
        return _load(conn, row)
    finally:
        conn.close()


def list_searches(storage: Any) -> list[StoredSearch]:
    """Every search in a storage file, oldest first."""
    _, conn = connect_reader(storage)
    try:
        return [_load(conn, row) for row in conn.execute("SELECT * FROM searches ORDER BY id").fetchall()]
    finally:
        conn.close()
