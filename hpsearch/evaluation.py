"""Evaluating one (candidate, fold): the only code that runs user estimators.

Everything that is the same for every task of a search — estimator template, data,
CV splits as index arrays, scorers, fit params — lives in one
:class:`EvaluationContext`, shipped to each worker once. :func:`evaluate` then needs
only ``(params, fold)``. It mirrors scikit-learn's ``_fit_and_score`` step for step
(clone, set_params, split, fit, score, timings), so scores equal ``GridSearchCV``'s,
and it turns a failing fit into data: ``error_score`` plus the traceback.
"""

from __future__ import annotations

import numbers
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import _safe_indexing
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.validation import _num_samples

__all__ = ["EvaluationContext", "FoldResult", "evaluate"]


@dataclass
class EvaluationContext:
    """What every task of one search shares.

    Attributes
    ----------
    estimator : estimator
        The unfitted template; each task works on a clone.
    X, y : array-like
        The full data; folds are taken by index.
    splits : list of (train_indices, test_indices)
        The CV splits, computed once by the master.
    scorers : dict of name -> scorer
        Single-metric searches use the one key ``"score"``.
    fit_params : dict
        Passed to ``fit``; sample-aligned values are indexed by the train fold.
    score_params : dict
        Passed to the scorers, indexed by the fold scored (scikit-learn passes a
        ``sample_weight`` fit param to scorers that accept it; so does hpsearch).
    error_score : float or "raise"
    return_train_score : bool
    prefix_cache : PrefixCacheConfig or None
        Set when the pipeline prefixes candidates share are fitted once per fold
        and reused (see :mod:`hpsearch.prefix`); None fits every candidate from scratch.
    subsample_offsets : dict of int -> int
        Adaptive search on the number of samples appends, after the CV folds, one
        subsampled copy of every fold per training-set size; this maps each size to
        the index of its first split (0 for a size that is the whole data). A task
        names the split it runs on, so workers need nothing more.
    """

    estimator: Any
    X: Any
    y: Any
    splits: list[tuple[np.ndarray, np.ndarray]]
    scorers: dict[str, Callable[..., float]]
    fit_params: dict[str, Any] = field(default_factory=dict)
    score_params: dict[str, Any] = field(default_factory=dict)
    error_score: float | str = np.nan
    return_train_score: bool = False
    prefix_cache: Any = None
    subsample_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def n_splits(self) -> int:
        """The number of CV folds (subsampled copies, if any, follow them in ``splits``)."""
        if not self.subsample_offsets:  # read once per task: no generator for the usual case
            return len(self.splits)
        return min((o for o in self.subsample_offsets.values() if o), default=len(self.splits))


#: Longest error text a result carries over the wire (worker messages stay small).
MAX_ERROR_CHARS = 32_768


def clip_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping its start and its end (a traceback's
    last lines say what failed).

    Examples
    --------
    >>> clip_text("a" * 10 + "b" * 10, limit=12)
    'aaa\\n[... 8 characters cut ...]\\nbbbbbbbbb'
    """
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


@dataclass
class FoldResult:
    """The outcome of one task: scores per scorer name, timings, and any error.

    ``error`` is the formatted traceback of a failed fit (then every score is
    ``error_score``). ``exception`` keeps the exception object for in-process
    workers only; it never crosses the wire.
    """

    test_scores: dict[str, float]
    fit_time: float
    score_time: float
    n_test_samples: int
    train_scores: dict[str, float] | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @classmethod
    def failed(
        cls,
        score_names: Iterable[str],
        error_score: float | str,
        return_train_score: bool,
        error: str,
        *,
        fit_time: float = 0.0,
        n_test_samples: int = 0,
        exception: BaseException | None = None,
    ) -> FoldResult:
        """The result of a task that did not run to the end: ``error_score`` for every
        scorer (NaN when ``error_score="raise"``, which the scheduler enforces).

        Examples
        --------
        >>> FoldResult.failed(["score"], 0.0, False, "ValueError: bad C").test_scores
        {'score': 0.0}
        """
        value = np.nan if error_score == "raise" else float(error_score)
        names = list(score_names)
        return cls(
            test_scores=dict.fromkeys(names, value),
            train_scores=dict.fromkeys(names, value) if return_train_score else None,
            fit_time=fit_time,
            score_time=0.0,
            n_test_samples=n_test_samples,
            error=error,
            exception=exception,
        )

    def to_message(self) -> dict[str, Any]:
        """A msgpack-safe dict (plain floats, ints and strs), for the wire."""
        return {
            "test_scores": {k: float(v) for k, v in self.test_scores.items()},
            "train_scores": (
                None if self.train_scores is None else {k: float(v) for k, v in self.train_scores.items()}
            ),
            "fit_time": float(self.fit_time),
            "score_time": float(self.score_time),
            "n_test_samples": int(self.n_test_samples),
            "error": None if self.error is None else clip_text(self.error),
        }

    @classmethod
    def from_message(cls, msg: Mapping[str, Any]) -> FoldResult:
        """Rebuild a result from :meth:`to_message` output, checking every type."""
        # The master runs this once per task: plain loops, no closure or generator.
        train = msg.get("train_scores")
        error = msg.get("error")
        if error is not None and not isinstance(error, str):
            raise ValueError("error must be a string or None")
        fit_time, score_time = msg.get("fit_time"), msg.get("score_time")
        if not isinstance(fit_time, (int, float)):
            raise ValueError("fit_time must be a number")
        if not isinstance(score_time, (int, float)):
            raise ValueError("score_time must be a number")
        n_test = msg.get("n_test_samples")
        if not isinstance(n_test, int):
            raise ValueError("n_test_samples must be an integer")
        return cls(
            test_scores=_wire_scores(msg.get("test_scores"), "test_scores"),
            train_scores=None if train is None else _wire_scores(train, "train_scores"),
            fit_time=float(fit_time),
            score_time=float(score_time),
            n_test_samples=int(n_test),
            error=error,
        )


def _wire_scores(value: Any, what: str) -> dict[str, float]:
    """Scores from the wire: a map of scorer names to numbers, as floats."""
    if type(value) is dict or isinstance(value, Mapping):  # a dict from msgpack: no ABC check
        out = {}
        for name, score in value.items():
            if not isinstance(name, str) or not isinstance(score, (int, float)):
                break
            out[name] = float(score)
        else:
            return out
    raise ValueError(f"{what} must map scorer names to numbers")


def _index_fit_params(X: Any, fit_params: Mapping[str, Any], indices: np.ndarray) -> dict[str, Any]:
    """Index sample-aligned fit params by the fold, as scikit-learn does."""
    n_samples = _num_samples(X)
    out = {}
    for key, value in fit_params.items():
        out[key] = _safe_indexing(value, indices) if _sample_aligned(value, n_samples) else value
    return out


def _sample_aligned(value: Any, n_samples: int) -> bool:
    """An array-like with one entry per sample (anything else passes through as is)."""
    if np.isscalar(value) or isinstance(value, Mapping) or not hasattr(value, "__len__"):
        return False
    try:
        return _num_samples(value) == n_samples
    except TypeError:
        return False


def _split(estimator: Any, X: Any, y: Any, indices: np.ndarray, train: np.ndarray | None = None) -> tuple[Any, Any]:
    """The fold's rows of X and y, as scikit-learn's ``_safe_split`` takes them.

    Plain numpy arrays are indexed directly: the same ``X[indices]`` that
    ``_safe_split`` ends in, without its per-call dataframe detection, which costs
    more than a small fit. Pairwise estimators and other containers go through it.
    """
    if rows_by_index(estimator, X, y):
        return X[indices], None if y is None else y[indices]
    return _safe_split(estimator, X, y, indices, train)


#: Arrays whose folds are ``X[indices]``, as ``_safe_split`` ends up taking them.
PLAIN_ARRAYS = (np.ndarray, np.memmap)


def rows_by_index(estimator: Any, X: Any, y: Any) -> bool:
    """Whether the folds of ``X`` and ``y`` are ``X[indices]``: plain numpy arrays (or
    memmaps) and an estimator that is not pairwise (whose test fold also takes columns)."""
    return type(X) in PLAIN_ARRAYS and (y is None or type(y) in PLAIN_ARRAYS) and _is_pairwise(estimator) is False


#: The rows of a fold, as scikit-learn's ``_safe_split`` takes them (see :func:`_split`).
split_rows = _split


def _is_pairwise(estimator: Any) -> bool | None:
    """The estimator's pairwise tag; None for an estimator without scikit-learn's tags
    (``_safe_split`` then decides, as it would)."""
    try:
        return bool(estimator.__sklearn_tags__().input_tags.pairwise)
    except AttributeError:
        return None


def _score(
    estimator: Any, X: Any, y: Any, scorers: Mapping[str, Callable[..., float]], params: Mapping[str, Any]
) -> dict[str, float]:
    if len(scorers) == 1:
        (name, scorer), = scorers.items()
        return {name: _as_float(name, scorer(estimator, X, y, **params))}
    from sklearn.metrics import check_scoring

    # check_scoring turns a dict of scorers into one multimetric scorer that caches
    # predictions, so each metric does not predict again.
    multi = check_scoring(estimator, scoring=dict(scorers))
    return {name: _as_float(name, value) for name, value in multi(estimator, X, y, **params).items()}


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, str):  # a scorer error formatted by the multimetric scorer
        raise RuntimeError(value)
    if not isinstance(value, numbers.Real):
        raise TypeError(f"scorer {name!r} returned {value!r} ({type(value).__name__}); a scorer must return a number")
    return float(value)


def evaluate(context: EvaluationContext, params: Mapping[str, Any], fold: int) -> FoldResult:
    """Fit a clone of the template with ``params`` on one fold and score it.

    A fit or scoring error never escapes: the result carries ``error_score`` for
    every scorer and the traceback (``error_score="raise"`` is enforced by the
    scheduler, which sees every result first).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.metrics import get_scorer
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1]]); y = np.array([0, 0, 1, 1])
    >>> ctx = EvaluationContext(LogisticRegression(), X, y,
    ...                         splits=[(np.array([0, 2]), np.array([1, 3]))],
    ...                         scorers={"score": get_scorer("accuracy")})
    >>> evaluate(ctx, {"C": 1.0}, 0).test_scores
    {'score': 1.0}
    """
    custom = getattr(context, "evaluate_task", None)
    if custom is not None:  # a context that brings its own evaluation (scikit-learn's)
        return custom(params, fold)
    return evaluate_plain(context, params, fold)


def evaluate_plain(context: EvaluationContext, params: Mapping[str, Any], fold: int) -> FoldResult:
    """:func:`evaluate` without the context's own evaluation (``evaluate_task``): the
    one that shares pipeline prefixes (:mod:`hpsearch.prefix`)."""
    train, test = context.splits[fold]
    start = time.perf_counter()
    fit_time = score_time = 0.0
    train_scores = None
    try:
        # Inside the try: an estimator may check a value in set_params (a property
        # setter, a custom estimator), and a bad value is a failed fit like any other,
        # not a task that crashes whatever runs it.
        estimator = clone(context.estimator).set_params(**clone(dict(params), safe=False))
        fit_params = _index_fit_params(context.X, context.fit_params, train)
        score_params_test = _index_fit_params(context.X, context.score_params, test)
        if context.prefix_cache is not None:
            from .prefix import fit_and_score, plan_reuse

            reuse = plan_reuse(context, estimator)
            if reuse is not None:  # the pipeline's prefix is fitted once per fold and shared
                outcome = fit_and_score(
                    reuse, context, fold, score_params_test,
                    lambda: _index_fit_params(context.X, context.score_params, train), _score,
                )
                return FoldResult(
                    test_scores=outcome.test_scores,
                    train_scores=outcome.train_scores,
                    fit_time=outcome.fit_time,
                    score_time=outcome.score_time,
                    n_test_samples=outcome.n_test_samples,
                )
        X_train, y_train = _split(estimator, context.X, context.y, train)
        if y_train is None:
            estimator.fit(X_train, **fit_params)
        else:
            estimator.fit(X_train, y_train, **fit_params)
        fit_time = time.perf_counter() - start
        if not context.return_train_score:
            # Folds are copies of their rows: letting the training fold go before the
            # test fold is taken holds one of them at a time, not both (what a fit
            # adds to the data's own memory on each worker).
            X_train = y_train = None
        X_test, y_test = _split(estimator, context.X, context.y, test, train)
        n_test = _num_samples(X_test)
        test_scores = _score(estimator, X_test, y_test, context.scorers, score_params_test)
        score_time = time.perf_counter() - start - fit_time
        if context.return_train_score:
            score_params_train = _index_fit_params(context.X, context.score_params, train)
            train_scores = _score(estimator, X_train, y_train, context.scorers, score_params_train)
    except Exception as exc:
        return FoldResult.failed(
            context.scorers, context.error_score, context.return_train_score, traceback.format_exc(),
            fit_time=fit_time or time.perf_counter() - start, n_test_samples=len(test), exception=exc,
        )
    return FoldResult(
        test_scores=test_scores,
        train_scores=train_scores,
        fit_time=fit_time,
        score_time=score_time,
        n_test_samples=n_test,
    )
