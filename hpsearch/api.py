"""``run_search``: the one entry point of hpsearch.

It checks every argument before any fit runs, builds the
:class:`~hpsearch.evaluation.EvaluationContext` (CV splits are computed here, once),
picks the strategy and the workers, runs the scheduler, and turns the fold results
into a :class:`~hpsearch.results.SearchResult` — refitting the best candidate on all
the data, as scikit-learn's search estimators do.
"""

from __future__ import annotations

import logging
import numbers
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring, get_scorer, get_scorer_names
from sklearn.model_selection import check_cv
from sklearn.utils.validation import check_consistent_length, indexable

from .errors import FitFailedError, FitFailedWarning, InvalidParameterError, SearchSpaceError
from .evaluation import EvaluationContext, FoldResult
from .results import SearchResult, build_cv_results
from .scheduler import SearchProgress, run_scheduler
from .space import Space, SpaceSpec
from .strategies.base import Strategy
from .strategies.grid import GridStrategy
from .strategies.random import RandomStrategy
from .workers.base import WorkerPool
from .workers.threads import ThreadWorkers

logger = logging.getLogger(__name__)

__all__ = ["run_search"]

WorkersSpec = Union[int, WorkerPool, Sequence[Union[int, WorkerPool]]]
_STRATEGIES = ("grid", "random", "bayes")


def run_search(
    estimator: Any,
    space: SpaceSpec,
    X: Any,
    y: Any = None,
    *,
    strategy: Literal["grid", "random", "bayes"] | Strategy = "grid",
    n_iter: int = 10,
    cv: Any = 5,
    scoring: Any = None,
    refit: bool | str | Callable[[dict[str, Any]], int] = True,
    groups: Any = None,
    fit_params: Mapping[str, Any] | None = None,
    workers: WorkersSpec = 1,
    error_score: float | Literal["raise"] = np.nan,
    return_train_score: bool = False,
    random_state: Any = None,
    progress: bool | None = None,
    fit_timeout: float | None = None,
    max_task_deaths: int = 3,
) -> SearchResult:
    """Search hyperparameters of ``estimator`` by cross-validation.

    Parameters
    ----------
    estimator : estimator object
        Any scikit-learn compatible estimator or pipeline; it is cloned, never fitted.
    space : dict, list of dicts or Space
        Parameter name -> values: lists, :class:`~hpsearch.Real`,
        :class:`~hpsearch.Integer`, :class:`~hpsearch.Categorical`, or scipy.stats
        distributions. A list of dicts searches several sub-spaces.
    X : array-like or sparse matrix of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, n_outputs), optional
    strategy : {"grid", "random", "bayes"} or Strategy
        ``"grid"`` tries every point (``ParameterGrid`` semantics); ``"random"``
        samples ``n_iter`` points (``ParameterSampler`` semantics); ``"bayes"`` runs
        ``n_iter`` rounds of Bayesian optimisation. Any object with ``ask``/``tell``
        and ``finished`` works too.
    n_iter : int
        Candidates for random and Bayesian search.
    cv, scoring, refit, groups, error_score, return_train_score
        As in scikit-learn's ``GridSearchCV``: ``scoring`` may be a name, a callable,
        or a list/dict for several metrics (then ``refit`` names the one that picks the
        best candidate, or is a callable taking ``cv_results_``, or False).
    fit_params : dict, optional
        Passed to every ``fit``; sample-aligned arrays are split with the folds.
    workers : int, WorkerPool, or a list of them
        An int N runs N local threads. A pool such as ``RemoteWorkers`` or
        ``LocalProcesses`` runs on processes or other machines; a list combines them.
    random_state : int, RandomState or None
        Seed of random and Bayesian search.
    progress : bool or None
        Show a progress bar; None shows it when standard error is a terminal.
    fit_timeout : float or None
        Seconds one fit (and its scoring) may take. A fit past it is recorded as a
        failed fit (its scores are ``error_score``, its error says
        ``FitTimeoutError``) and abandoned: a worker process running it is stopped
        and replaced, a thread is left to end in the background while a new one
        takes its place. None (default): no limit.
    max_task_deaths : int
        Times a (candidate, fold) task may die with the worker process running it
        before it fails as data (``TaskFailedError`` in its error). Only tasks that
        were running count a death, not those queued on that worker.

    Notes
    -----
    Stragglers: when a worker has nothing to do and nothing is queued, a task that
    has run (or waited in a worker's queue) longer than 3 times the median duration
    of the search's finished tasks, and at least 0.5 s, is started again on that
    worker; the first result wins. A worker that slows down mid-search so does not
    hold up the end of the search.

    Returns
    -------
    SearchResult
        ``cv_results_``, ``best_params_``, ``best_score_``, ``best_estimator_``, ...

    Raises
    ------
    SearchSpaceError, InvalidParameterError
        Before any fit, for a bad space or argument.
    FitFailedError
        When every fit failed (the message holds the first traceback).

    Whatever ends a search early — Ctrl-C (KeyboardInterrupt), a failed fit with
    ``error_score="raise"``, :class:`~hpsearch.errors.NoWorkersError` when every remote
    worker is gone — keeps the candidates completed so far: the exception's
    ``partial_result`` is a :class:`SearchResult` of them (without refit). So does a
    refit that raises (the refit callable, or the final fit): its exception's
    ``partial_result`` holds every candidate.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from hpsearch import run_search
    >>> X, y = load_iris(return_X_y=True)
    >>> result = run_search(SVC(), {"C": [0.1, 1, 10]}, X, y, cv=3, workers=2, progress=False)
    >>> result.best_params_
    {'C': 1}
    >>> round(result.best_score_, 3)
    0.98
    """
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise InvalidParameterError(
            f"estimator must be a scikit-learn compatible estimator with fit and get_params, got {estimator!r}"
        )
    search_space = Space.from_spec(space)
    if not any(search_space.subspaces):
        raise SearchSpaceError(
            "the search space has no parameter to search; give at least one, e.g. {'C': [0.1, 1, 10]}"
        )
    _check_param_names(estimator, search_space)
    if error_score != "raise" and not isinstance(error_score, numbers.Number):
        raise InvalidParameterError(f"error_score must be 'raise' or a number, got {error_score!r}")
    if fit_timeout is not None and (
        isinstance(fit_timeout, bool) or not isinstance(fit_timeout, numbers.Real) or not fit_timeout > 0
    ):
        raise InvalidParameterError(
            f"fit_timeout must be a number of seconds > 0, or None for no limit; got {fit_timeout!r}"
        )
    if isinstance(max_task_deaths, bool) or not isinstance(max_task_deaths, numbers.Integral) or max_task_deaths < 1:
        raise InvalidParameterError(f"max_task_deaths must be an integer >= 1, got {max_task_deaths!r}")
    pools, owned = _make_pools(workers)
    search_strategy = _make_strategy(strategy, search_space, n_iter, random_state)

    X, y, groups = _check_data(X, y, groups)
    scorers = _make_scorers(estimator, scoring)
    multimetric = not (scoring is None or isinstance(scoring, str) or callable(scoring))
    refit_metric = _check_refit(refit, scorers, multimetric)
    cv_checked = check_cv(cv, y, classifier=is_classifier(estimator))
    splits = [(np.asarray(train), np.asarray(test)) for train, test in cv_checked.split(X, y, groups)]
    if not splits:
        raise InvalidParameterError(f"the CV splitter {cv_checked!r} produced no split")
    context = EvaluationContext(
        estimator=clone(estimator),
        X=X,
        y=y,
        splits=splits,
        scorers=scorers,
        fit_params=dict(fit_params or {}),
        score_params=_score_params(fit_params or {}, scorers),
        error_score=error_score,
        return_train_score=return_train_score,
    )

    def make_result(finished: list[tuple[Any, list[FoldResult]]], failures: list[str],
                    best: bool = True) -> SearchResult:
        cv_results = build_cv_results(
            [c.params for c, _ in finished], [r for _, r in finished], list(scorers), return_train_score
        )
        result = SearchResult(
            cv_results_=cv_results,
            n_splits_=len(splits),
            multimetric_=multimetric,
            scorer_=scorers if multimetric else scorers["score"],
            refit_metric=refit_metric,
            fit_failures_=failures,
        )
        if best and (refit or not multimetric):
            result.best_index_ = _best_index(refit, refit_metric, cv_results)
            if not callable(refit):
                result.best_score_ = float(cv_results[f"mean_test_{refit_metric}"][result.best_index_])
            result.best_params_ = cv_results["params"][result.best_index_]
        return result

    bar = _progress_bar(progress, search_strategy, len(splits))
    try:
        finished = run_scheduler(
            search_strategy,
            pools,
            context,
            score_key=refit_metric,
            on_candidate=bar.update if bar is not None else None,
            fit_timeout=None if fit_timeout is None else float(fit_timeout),
            max_task_deaths=int(max_task_deaths),
        )
    except BaseException as exc:
        _keep_partial_result(exc, make_result)
        raise
    finally:
        if bar is not None:
            bar.close()
        for pool in owned:
            pool.stop()
    if not finished:
        raise SearchSpaceError("the strategy proposed no candidate")
    failures = _check_fit_failures([r for _, r in finished], error_score)
    try:
        result = make_result(finished, failures)
        if refit:
            best = clone(estimator).set_params(**clone(result.best_params_, safe=False))
            start = time.time()
            if y is None:
                best.fit(X, **(fit_params or {}))
            else:
                best.fit(X, y, **(fit_params or {}))
            result.refit_time_ = time.time() - start
            result.best_estimator_ = best
    except BaseException as exc:  # a refit callable or the refit itself raised
        exc.completed_candidates = finished  # type: ignore[attr-defined]
        _keep_partial_result(exc, make_result)
        raise
    return result


def _keep_partial_result(exc: BaseException, make_result: Callable[..., SearchResult]) -> None:
    """Give a search that ended early (Ctrl-C, ``error_score="raise"``, every worker
    lost) a ``partial_result``: the candidates completed so far, not refit."""
    completed = getattr(exc, "completed_candidates", None)
    if not completed:
        return
    failures = [r.error for _, folds in completed for r in folds if r.error is not None]
    try:
        try:
            exc.partial_result = make_result(completed, failures)  # type: ignore[attr-defined]
        except Exception:  # a refit callable that raises: the results, without best_*
            exc.partial_result = make_result(completed, failures, False)  # type: ignore[attr-defined]
    except Exception:  # never hide the error that ended the search
        logger.debug("no partial result", exc_info=True)
        return
    logger.warning(
        "the search stopped early (%s) after %d completed candidate(s); they are kept "
        "in the exception's partial_result (cv_results_, best_params_, ...)",
        type(exc).__name__, len(completed),
    )


# -- argument checks -------------------------------------------------------------------


def _check_param_names(estimator: Any, space: Space) -> None:
    valid = estimator.get_params(deep=True)
    for sub in space.subspaces:
        for name in sub:
            if name not in valid:
                raise InvalidParameterError(
                    f"invalid parameter {name!r} for estimator {type(estimator).__name__}. "
                    f"Valid parameters are: {sorted(valid)!r}"
                )


def _make_strategy(strategy: Any, space: Space, n_iter: Any, random_state: Any) -> Strategy:
    if isinstance(strategy, str):
        if strategy == "grid":
            return GridStrategy(space)  # refuses continuous dimensions, naming them
        if strategy == "random":
            return RandomStrategy(space, n_iter, random_state=random_state)
        if strategy == "bayes":
            from .strategies.bayes import BayesStrategy

            return BayesStrategy(space, n_iter, random_state=random_state)
        raise InvalidParameterError(
            f"unknown strategy {strategy!r}; use one of {list(_STRATEGIES)} or a Strategy object"
        )
    if isinstance(strategy, Strategy):
        return strategy
    raise InvalidParameterError(
        f"strategy must be one of {list(_STRATEGIES)} or an object with ask, tell, finished "
        f"and total, got {strategy!r}"
    )


def _make_pools(workers: Any) -> tuple[list[WorkerPool], list[WorkerPool]]:
    """The pools to use, and those run_search created (and so must close)."""
    items = list(workers) if isinstance(workers, (list, tuple)) else [workers]
    if not items:
        raise InvalidParameterError("workers is an empty list; give a number of threads or a worker pool")
    pools, owned = [], []
    for item in items:
        if isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if item < 1:
                raise InvalidParameterError(f"workers must be >= 1, got {item}")
            pool = ThreadWorkers(int(item))
            pools.append(pool)
            owned.append(pool)
        elif isinstance(item, WorkerPool):
            pools.append(item)
        else:
            raise InvalidParameterError(
                f"workers must be a number of threads (int >= 1), a worker pool such as "
                f"RemoteWorkers or LocalProcesses, or a list of them; got {item!r}"
            )
    return pools, owned


def _check_data(X: Any, y: Any, groups: Any) -> tuple[Any, Any, Any]:
    try:
        check_consistent_length(X, y, groups)
    except ValueError as exc:
        raise InvalidParameterError(
            f"X, y and groups must have the same number of samples: {exc}"
        ) from None
    return indexable(X, y, groups)


def _make_scorers(estimator: Any, scoring: Any) -> dict[str, Callable[..., float]]:
    def named(name: str) -> Callable[..., float]:
        try:
            return get_scorer(name)
        except ValueError:
            raise InvalidParameterError(
                f"unknown scorer {name!r}; valid names are listed by "
                f"sklearn.metrics.get_scorer_names(): {sorted(get_scorer_names())!r}"
            ) from None

    if scoring is None or callable(scoring):
        return {"score": check_scoring(estimator, scoring=scoring)}
    if isinstance(scoring, str):
        return {"score": named(scoring)}
    if isinstance(scoring, (list, tuple, set)):
        names = list(scoring)
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise InvalidParameterError(
                f"scoring as a list must hold distinct scorer names, got {scoring!r}"
            )
        return {n: named(n) for n in names}
    if isinstance(scoring, Mapping):
        if not scoring or not all(isinstance(k, str) for k in scoring):
            raise InvalidParameterError(
                f"scoring as a dict must map names to scorers and not be empty, got {scoring!r}"
            )
        return {k: named(v) if isinstance(v, str) else v for k, v in scoring.items()}
    raise InvalidParameterError(
        f"scoring must be None, a scorer name, a callable, or a list/dict of them; got {scoring!r}"
    )


def _score_params(fit_params: Mapping[str, Any], scorers: Mapping[str, Any]) -> dict[str, Any]:
    """A ``sample_weight`` fit param also weights the scores, as in scikit-learn,
    when every scorer accepts it."""
    weight = fit_params.get("sample_weight")
    accepts = all(getattr(s, "_accept_sample_weight", lambda: False)() for s in scorers.values())
    return {"sample_weight": weight} if weight is not None and accepts else {}


def _check_refit(refit: Any, scorers: Mapping[str, Any], multimetric: bool) -> str:
    """The metric that ranks candidates for best_* (and that the strategy maximises)."""
    if not multimetric:
        if not (isinstance(refit, bool) or callable(refit)):
            raise InvalidParameterError(f"refit must be True, False or a callable, got {refit!r}")
        return "score"
    if isinstance(refit, str) and refit in scorers:
        return refit
    if refit is False or callable(refit):
        return next(iter(scorers))
    raise InvalidParameterError(
        "for multi-metric scoring, refit must name one of the scorers "
        f"{list(scorers)!r}, be a callable, or be False; got {refit!r}"
    )


def _best_index(refit: Any, metric: str, cv_results: dict[str, Any]) -> int:
    if callable(refit):
        index = refit(cv_results)
        if not isinstance(index, numbers.Integral):
            raise TypeError(f"the refit callable must return an int index, got {index!r}")
        if not 0 <= index < len(cv_results["params"]):
            raise IndexError(f"the refit callable returned {index}, outside 0..{len(cv_results['params']) - 1}")
        return int(index)
    return int(cv_results[f"rank_test_{metric}"].argmin())


def _check_fit_failures(fold_results: Sequence[Sequence[FoldResult]], error_score: Any) -> list[str]:
    errors = [r.error for folds in fold_results for r in folds if r.error is not None]
    if not errors:
        return []
    n_fits = sum(len(folds) for folds in fold_results)
    counts = Counter(errors)
    details = "\n".join(f"{'-' * 80}\n{n} fits failed with the following error:\n{e}" for e, n in counts.items())
    if len(errors) == n_fits:
        raise FitFailedError(
            f"All the {n_fits} fits failed; the estimator is very likely misconfigured. "
            "Set error_score='raise' to stop at the first failure.\n"
            f"The first failure:\n{errors[0]}\nAll failures:\n{details}"
        )
    warnings.warn(
        f"{len(errors)} fits failed out of a total of {n_fits}; their scores are set to "
        f"error_score={error_score}. Set error_score='raise' to stop at the first failure.\n{details}",
        FitFailedWarning,
        stacklevel=3,
    )
    return errors


class _ProgressBar:
    def __init__(self, total: int | None) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, unit="fit", desc="hpsearch", dynamic_ncols=True)

    def update(self, progress: SearchProgress) -> None:
        self._bar.update(progress.tasks_done - self._bar.n)
        if progress.best_score != float("-inf"):
            self._bar.set_postfix(best=f"{progress.best_score:.4f}", refresh=False)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(progress: bool | None, strategy: Strategy, n_splits: int) -> _ProgressBar | None:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    total = strategy.total
    return _ProgressBar(None if total is None else total * n_splits)
