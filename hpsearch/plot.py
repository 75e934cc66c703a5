"""Plots of a search, for notebooks: best score so far, and score against a parameter.

Every function takes the result of any search — a :class:`~hpsearch.SearchResult`, a
``cv_results_`` dict (also scikit-learn's), a :class:`~hpsearch.storage.StoredSearch`,
or the path of a storage file (then ``name=`` picks the search) — draws on ``ax``
(a new figure's when None) and returns the matplotlib ``Axes``. matplotlib is an
optional extra: ``pip install "hpsearch[plot]"``.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from sklearn.datasets import load_iris
>>> from sklearn.tree import DecisionTreeClassifier
>>> from hpsearch import run_search, plot
>>> X, y = load_iris(return_X_y=True)
>>> result = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 2, 3, 4]},
...                     X, y, cv=3, progress=False)
>>> ax = plot.best_score(result)
>>> ax.get_ylabel()
'best mean_test_score so far'
>>> ax = result.plot("param", param="max_depth")
>>> len(ax.collections[0].get_offsets())
4
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidParameterError, MissingDependencyError

__all__ = ["best_score", "score_vs_param", "plot"]


@dataclass
class _Trials:
    params: list[dict[str, Any]]
    scores: list[float]  # nan for a failed or unfinished candidate
    times: list[float] | None  # seconds from the start at which each candidate finished
    time_label: str
    metric: str


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            'hpsearch.plot needs matplotlib: pip install "hpsearch[plot]" (or pip install matplotlib)'
        ) from None
    return plt


def _trials(source: Any, metric: str | None, name: str | None) -> _Trials:
    import os

    from .results import SearchResult
    from .storage import StoredSearch, load_search

    if isinstance(source, (str, os.PathLike)):
        source = load_search(source, name)
    if isinstance(source, StoredSearch):
        if metric not in (None, source.score_key):
            raise InvalidParameterError(
                f"a stored search keeps the score it maximises ({source.score_key!r}), not {metric!r}"
            )
        start = source.runs[0]["started"] if source.runs else 0.0
        done = [c for c in source.candidates if c["done"] is not None]
        done.sort(key=lambda c: c["done"])
        return _Trials(
            [c["params"] for c in done],
            [math.nan if c["score"] is None else c["score"] for c in done],
            [c["done"] - start for c in done],
            "seconds since the search started",
            source.score_key,
        )
    if isinstance(source, SearchResult):
        metric = metric or source.refit_metric
        cv_results = source.cv_results_
    elif isinstance(source, dict) and "params" in source:
        cv_results = source
        metric = metric or ("score" if "mean_test_score" in source else None)
        if metric is None:
            raise InvalidParameterError(
                "these cv_results_ have several metrics: pass metric= (one of "
                f"{sorted(k[len('mean_test_'):] for k in source if k.startswith('mean_test_'))})"
            )
    else:
        raise InvalidParameterError(
            "plot a SearchResult, a cv_results_ dict, a StoredSearch or a storage file path; "
            f"got {type(source).__name__}"
        )
    key = f"mean_test_{metric}"
    if key not in cv_results:
        raise InvalidParameterError(f"no {key!r} in the results; metrics: "
                                    f"{sorted(k[len('mean_test_'):] for k in cv_results if k.startswith('mean_test_'))}")
    times = None
    if "mean_fit_time" in cv_results:
        n_splits = sum(1 for k in cv_results if k.startswith("split") and k.endswith(f"_test_{metric}"))
        per = (np.asarray(cv_results["mean_fit_time"]) + np.asarray(cv_results["mean_score_time"])) * max(n_splits, 1)
        times = list(np.cumsum(per))
    return _Trials(list(cv_results["params"]), [float(s) for s in cv_results[key]], times,
                   "fit and score time so far (s, summed over fits)", metric)


def _axes(ax: Any) -> Any:
    if ax is None:
        _, ax = _pyplot().subplots()
    return ax


def best_score(source: Any, *, x: str = "candidate", ax: Any = None, metric: str | None = None,
               name: str | None = None) -> Any:
    """The best mean test score so far, against candidates or time, over every score.

    Parameters
    ----------
    source : SearchResult, cv_results_ dict, StoredSearch or storage path
    x : {"candidate", "time"}
        Candidates in the order they were proposed (stored: finished), or time: the
        wall clock for a stored search, fit and score time summed for a result.
    ax : matplotlib Axes, optional
    metric : str, optional
        The scorer of a multi-metric search (default: the one refit uses).
    name : str, optional
        The search in a storage file that holds several.
    """
    if x not in ("candidate", "time"):
        raise InvalidParameterError(f"x must be 'candidate' or 'time', got {x!r}")
    trials = _trials(source, metric, name)
    ax = _axes(ax)
    scores = np.asarray(trials.scores, dtype=float)
    best = np.fmax.accumulate(np.where(np.isnan(scores), -np.inf, scores))
    best[np.isinf(best)] = np.nan
    if x == "time":
        if trials.times is None:
            raise InvalidParameterError("these results hold no times; plot x='candidate'")
        xs = np.asarray(trials.times)
        ax.set_xlabel(trials.time_label)
    else:
        xs = np.arange(1, len(scores) + 1)
        ax.set_xlabel("candidates")
    ax.scatter(xs, scores, s=12, color="0.6", label="candidate")
    ax.step(xs, best, where="post", color="C0", linewidth=2, label="best so far")
    ax.set_ylabel(f"best mean_test_{trials.metric} so far")
    ax.legend(loc="lower right")
    return ax


def score_vs_param(source: Any, param: str, *, ax: Any = None, metric: str | None = None,
                   name: str | None = None, log: bool | None = None) -> Any:
    """Mean test score of each candidate against one parameter's value.

    Numbers go on a numeric axis (logarithmic when they span three decades or more,
    unless ``log`` says otherwise); other values are spread as categories.
    """
    trials = _trials(source, metric, name)
    rows = [(p[param], s) for p, s in zip(trials.params, trials.scores) if param in p]
    if not rows:
        names = sorted({k for p in trials.params for k in p})
        raise InvalidParameterError(f"no candidate has the parameter {param!r}; parameters: {names}")
    ax = _axes(ax)
    values = [v for v, _ in rows]
    scores = np.asarray([s for _, s in rows], dtype=float)
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)
    if numeric:
        xs = np.asarray(values, dtype=float)
        if log is None:
            log = bool(xs.min() > 0 and xs.max() / xs.min() >= 1000)
        if log:
            ax.set_xscale("log")
    else:
        labels = list(dict.fromkeys(str(v) for v in values))
        xs = np.asarray([labels.index(str(v)) for v in values], dtype=float)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
    ax.scatter(xs, scores, c=scores, cmap="viridis", s=20)
    ax.set_xlabel(param)
    ax.set_ylabel(f"mean_test_{trials.metric}")
    return ax


def plot(source: Any, kind: str = "best", **kwargs: Any) -> Any:
    """``kind="best"`` (:func:`best_score`) or ``"param"`` (:func:`score_vs_param`, needs ``param=``)."""
    if kind == "best":
        return best_score(source, **kwargs)
    if kind == "param":
        if "param" not in kwargs:
            raise InvalidParameterError("plot(kind='param') needs param=<parameter name>")
        return score_vs_param(source, **kwargs)
    raise InvalidParameterError(f"kind must be 'best' or 'param', got {kind!r}")
