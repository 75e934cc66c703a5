"""The table that ``hpsearch status search.db`` prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .read import StoredSearch

__all__ = ["format_status"]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _value(v: Any) -> str:
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text if len(text) <= 30 else text[:27] + "..."


def _params(params: dict[str, Any] | None, width: int = 60) -> str:
    if params is None:
        return "-"
    text = ", ".join(f"{k}={_value(v)}" for k, v in params.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_status(searches: Sequence[StoredSearch]) -> str:
    """One row per search: progress, best score and params, failures, workers, time.

    Examples
    --------
    >>> print(format_status([]))
    no search in this file
    """
    if not searches:
        return "no search in this file"
    header = ["name", "status", "candidates", "tasks", "best score", "failed fits", "workers", "elapsed", "best params"]
    rows = []
    for s in searches:
        best = s.best
        total = "?" if s.total is None else str(s.total)
        tasks_total = "?" if s.tasks_total is None else str(s.tasks_total)
        score = "-" if best is None or not math.isfinite(best["score"]) else f"{best['score']:.4f}"
        rows.append([
            s.name, s.status, f"{s.candidates_done}/{total}", f"{s.tasks_done}/{tasks_total}", score,
            str(len(s.failures)), str(len({w["name"] for w in s.workers})), _duration(s.elapsed),
            _params(None if best is None else best["params"]),
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
