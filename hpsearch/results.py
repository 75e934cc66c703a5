"""Search results in scikit-learn's layout.

:func:`build_cv_results` turns per-candidate fold results into the ``cv_results_``
dict of ``GridSearchCV`` — same keys, dtypes, masked ``param_*`` arrays, ranking of
failed candidates — so code written for scikit-learn reads hpsearch results as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .evaluation import FoldResult

__all__ = ["SearchResult", "build_cv_results"]


def _masked_params(candidate_params: Sequence[dict[str, Any]]) -> dict[str, np.ma.MaskedArray]:
    """``param_<name>`` masked arrays, exactly as scikit-learn builds them."""
    n = len(candidate_params)
    values: dict[str, dict[int, Any]] = {}
    for i, params in enumerate(candidate_params):
        for name, value in params.items():
            values.setdefault(f"param_{name}", {})[i] = value
    out = {}
    for key, by_index in values.items():
        listed = list(by_index.values())
        try:
            arr = np.array(listed)
        except ValueError:  # e.g. lists of different lengths
            dtype = np.dtype(object)
        else:
            dtype = arr.dtype if arr.dtype.kind != "U" and arr.ndim == 1 else np.dtype(object)
        masked = np.ma.MaskedArray(np.empty(n, dtype=dtype), mask=True)
        for i, value in by_index.items():
            masked[i] = value
        out[key] = masked
    return out


def _rank(means: np.ndarray) -> np.ndarray:
    """Rank by decreasing mean; failed (nan) candidates tie with the worst."""
    if np.isnan(means).all():
        return np.ones_like(means, dtype=np.int32)
    filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
    return rankdata(-filled, method="min").astype(np.int32, copy=False)


def build_cv_results(
    candidate_params: Sequence[dict[str, Any]],
    fold_results: Sequence[Sequence[FoldResult]],
    scorer_names: Sequence[str],
    return_train_score: bool = False,
) -> dict[str, Any]:
    """Build ``cv_results_`` from each candidate's fold results, in candidate order.

    Examples
    --------
    >>> from hpsearch.evaluation import FoldResult
    >>> r = FoldResult({"score": 0.5}, fit_time=0.1, score_time=0.01, n_test_samples=10)
    >>> res = build_cv_results([{"C": 1}], [[r, r]], ["score"])
    >>> float(res["mean_test_score"][0]), int(res["rank_test_score"][0])
    (0.5, 1)
    """
    results: dict[str, Any] = {}

    def store(key: str, array: np.ndarray, splits: bool = False, rank: bool = False) -> None:
        if splits:
            for k in range(array.shape[1]):
                results[f"split{k}_{key}"] = array[:, k]
        means = np.average(array, axis=1)
        results[f"mean_{key}"] = means
        results[f"std_{key}"] = np.sqrt(np.average((array - means[:, np.newaxis]) ** 2, axis=1))
        if rank:
            results[f"rank_{key}"] = _rank(means)

    def table(get: Callable[[FoldResult], float]) -> np.ndarray:
        return np.array([[get(r) for r in folds] for folds in fold_results], dtype=np.float64)

    store("fit_time", table(lambda r: r.fit_time))
    store("score_time", table(lambda r: r.score_time))
    results.update(_masked_params(candidate_params))
    results["params"] = [dict(p) for p in candidate_params]
    for name in scorer_names:
        store(f"test_{name}", table(lambda r: r.test_scores[name]), splits=True, rank=True)
        if return_train_score:
            store(f"train_{name}", table(lambda r: r.train_scores[name]), splits=True)  # type: ignore[index]
    return results


class SearchResult:
    """The outcome of :func:`hpsearch.run_search`, with scikit-learn's attribute names.

    As on a fitted ``GridSearchCV``, an attribute that does not apply is not set
    (``hasattr`` tells): no ``best_*`` for a multi-metric search with ``refit=False``,
    no ``best_score_`` with a callable ``refit``, no ``best_estimator_`` /
    ``refit_time_`` without refit.

    Attributes
    ----------
    cv_results_ : dict of numpy arrays
        One entry per candidate, in the order the strategy proposed them; the layout
        of ``GridSearchCV.cv_results_`` (``pandas.DataFrame(result.cv_results_)`` works).
    best_index_ : int
        Index of the best candidate in ``cv_results_`` (per the refit rule).
    best_params_ : dict
    best_score_ : float
        Mean CV score of the best candidate.
    best_estimator_ : estimator
        The best candidate refit on all the data.
    refit_time_ : float
    n_splits_ : int
    multimetric_ : bool
    scorer_ : callable or dict of callables
    refit_metric : str
        The metric that ranks candidates in :meth:`summary`.
    fit_failures_ : list of str
        The traceback of every failed fit (empty when none failed).
    search_ : estimator
        The fitted search estimator (a :class:`hpsearch.GridSearchCV`, ...), when
        the search ran to its end.
    """

    # Declared, not defined: set only when they apply.
    best_index_: int
    best_params_: dict[str, Any]
    best_score_: float
    best_estimator_: Any
    refit_time_: float
    search_: Any

    _OPTIONAL = ("best_index_", "best_params_", "best_score_", "best_estimator_", "refit_time_", "search_")

    def __init__(
        self,
        cv_results_: dict[str, Any],
        n_splits_: int,
        multimetric_: bool,
        scorer_: Any,
        refit_metric: str,
        fit_failures_: Sequence[str] = (),
        **optional: Any,
    ) -> None:
        self.cv_results_ = cv_results_
        self.n_splits_ = n_splits_
        self.multimetric_ = multimetric_
        self.scorer_ = scorer_
        self.refit_metric = refit_metric
        self.fit_failures_ = list(fit_failures_)
        for name, value in optional.items():
            if name not in self._OPTIONAL:
                raise TypeError(f"SearchResult got an unexpected attribute {name!r}")
            setattr(self, name, value)

    @classmethod
    def from_search(cls, search: Any) -> SearchResult:
        """The result of a fitted search estimator (its attributes, shared)."""
        optional = {name: getattr(search, name) for name in cls._OPTIONAL[:-1] if hasattr(search, name)}
        return cls(
            search.cv_results_, search.n_splits_, search.multimetric_, search.scorer_,
            _refit_metric(search, search.cv_results_), getattr(search, "_fit_failures", []),
            search_=search, **optional,
        )

    @classmethod
    def from_results(cls, search: Any, cv_results: dict[str, Any], fit_failures: Sequence[str] = (),
                     best: bool = True) -> SearchResult:
        """The result of a search that ended early: ``cv_results_`` of its completed
        candidates, the best of them per the refit rule (unless ``best`` is False),
        nothing refit."""
        metric = _refit_metric(search, cv_results)
        multimetric = f"mean_test_{metric}" in cv_results and "mean_test_score" not in cv_results
        optional: dict[str, Any] = {}
        if best and (search.refit or not multimetric):
            index = search._select_best_index(search.refit, metric, cv_results)
            optional["best_index_"] = int(index)
            optional["best_params_"] = cv_results["params"][index]
            if not callable(search.refit):
                optional["best_score_"] = cv_results[f"mean_test_{metric}"][index]
        return cls(cv_results, search.n_splits_, multimetric, None, metric, fit_failures, **optional)

    @property
    def n_candidates(self) -> int:
        return len(self.cv_results_["params"])

    def summary(self, top: int | None = 10) -> str:
        """A ranked, human-readable table of the best ``top`` candidates (all if None).

        Examples
        --------
        >>> print(result.summary(top=3))  # doctest: +SKIP
        rank  mean_test_score  std_test_score  mean_fit_time  params
           1           0.9822          0.0066         0.0312  C=10, gamma=0.001
        ...
        """
        key = self.refit_metric
        ranks = self.cv_results_[f"rank_test_{key}"]
        order = sorted(range(len(ranks)), key=lambda i: (ranks[i], i))
        if top is not None:
            order = order[:top]
        header = ["rank", f"mean_test_{key}", f"std_test_{key}", "mean_fit_time", "params"]
        rows = []
        for i in order:
            params = ", ".join(f"{k}={_short(v)}" for k, v in self.cv_results_["params"][i].items())
            rows.append([
                str(ranks[i]),
                _num(self.cv_results_[f"mean_test_{key}"][i]),
                _num(self.cv_results_[f"std_test_{key}"][i]),
                _num(self.cv_results_["mean_fit_time"][i]),
                params,
            ])
        widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header[:-1])]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header[:-1], widths)) + "  " + header[-1]]
        for r in rows:
            lines.append("  ".join(v.rjust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
        shown = f"top {len(order)} of {self.n_candidates}" if len(order) < self.n_candidates else f"{self.n_candidates}"
        footer = f"{shown} candidates, {self.n_splits_}-fold CV"
        if self.fit_failures_:
            footer += f", {len(self.fit_failures_)} failed fits"
        return "\n".join(lines + [footer])

    def plot(self, kind: str = "best", **kwargs: Any) -> Any:
        """Plot the search (needs matplotlib): ``"best"`` score so far or score against
        a ``"param"``; see :mod:`hpsearch.plot`. Returns the matplotlib Axes."""
        from . import plot

        return plot.plot(self, kind, **kwargs)

    def __repr__(self) -> str:
        best = f", best_score_={self.best_score_:.4f}" if hasattr(self, "best_score_") else ""
        params = f", best_params_={self.best_params_!r}" if hasattr(self, "best_params_") else ""
        return f"SearchResult(n_candidates={self.n_candidates}, n_splits_={self.n_splits_}{best}{params})"


def _refit_metric(search: Any, cv_results: dict[str, Any]) -> str:
    """The metric ``best_*`` follow: ``score``, the ``refit`` metric, or the first."""
    if "mean_test_score" in cv_results:
        return "score"
    if isinstance(search.refit, str) and f"mean_test_{search.refit}" in cv_results:
        return str(search.refit)
    return next(k[len("mean_test_"):] for k in cv_results if k.startswith("mean_test_"))


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def _short(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
