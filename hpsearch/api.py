"""``run_search``: hyperparameter search in one call.

It checks its arguments before any fit runs, then builds the matching search
estimator (:class:`~hpsearch.GridSearchCV`, :class:`~hpsearch.RandomizedSearchCV`,
:class:`~hpsearch.BayesSearchCV`, or a strategy-driven one) and fits it: the function
and the classes run the same engine, with scikit-learn's semantics, and the fitted
search becomes a :class:`~hpsearch.results.SearchResult`.
"""

from __future__ import annotations

import logging
import numbers
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.utils.validation import check_consistent_length

from ._engine import WorkersSpec, check_workers
from . import adaptive
from .errors import InvalidParameterError, SearchSpaceError
from .prefix import make_prefix_config
from .results import SearchResult
from .scheduler import SearchProgress
from .scheduler.pruning import PairedPruner
from .search_cv import BayesSearchCV, GridSearchCV, RandomizedSearchCV, StrategySearchCV
from .space import Categorical, Dimension, Space, SpaceSpec
from .strategies.base import Strategy, check_n_iter

logger = logging.getLogger(__name__)

__all__ = ["run_search"]

_STRATEGIES = ("grid", "random", "bayes", *adaptive.ADAPTIVE_STRATEGIES)


def run_search(
    estimator: Any,
    space: SpaceSpec,
    X: Any,
    y: Any = None,
    *,
    strategy: Literal["grid", "random", "bayes", "halving", "halving_random", "hyperband"] | Strategy = "grid",
    n_iter: int | Literal["exhaust"] = 10,
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
    verbose: int = 0,
    callbacks: Sequence[Any] = (),
    storage: str | os.PathLike[str] | None = None,
    name: str | None = None,
    prefix_cache: bool | int = True,
    fit_timeout: float | None = None,
    max_task_deaths: int = 3,
    factor: float = 3,
    resource: str = "n_samples",
    min_resources: int | Literal["exhaust", "smallest"] = "exhaust",
    max_resources: int | Literal["auto"] = "auto",
    aggressive_elimination: bool = False,
    asynchronous: bool = False,
    incremental: bool = False,
    prune: bool | PairedPruner = False,
) -> SearchResult:
    """Search hyperparameters of ``estimator`` by cross-validation.

    The function form of :class:`~hpsearch.GridSearchCV` (``strategy="grid"``),
    :class:`~hpsearch.RandomizedSearchCV` (``"random"``) and
    :class:`~hpsearch.BayesSearchCV` (``"bayes"``): it builds that search, fits
    it, and returns its attributes as a :class:`~hpsearch.SearchResult`, so the
    semantics are scikit-learn's.

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
    strategy : {"grid", "random", "bayes", "halving", "halving_random", "hyperband"} or Strategy
        ``"grid"`` tries every point (``ParameterGrid`` semantics); ``"random"``
        samples ``n_iter`` points (``ParameterSampler`` semantics); ``"bayes"`` runs
        ``n_iter`` rounds of Bayesian optimisation. The adaptive strategies spend
        little on bad candidates: ``"halving"`` is successive halving over the grid
        (scikit-learn's ``HalvingGridSearchCV``: same candidates and ``cv_results_``,
        with ``iter`` and ``n_resources`` columns), ``"halving_random"`` over
        ``n_iter`` sampled candidates (``HalvingRandomSearchCV``), and ``"hyperband"``
        runs Hyperband's brackets of halving over sampled candidates side by side
        (with a ``bracket`` column). Any object with ``ask``/``tell`` and ``finished``
        works too.
    n_iter : int or "exhaust"
        Candidates for random and Bayesian search, and the first iteration's
        candidates of ``"halving_random"`` (there ``"exhaust"`` is allowed).
    cv, scoring, refit, groups, error_score, return_train_score
        As in scikit-learn's ``GridSearchCV``: ``scoring`` may be a name, a callable,
        or a list/dict for several metrics (then ``refit`` names the one that picks the
        best candidate, or is a callable taking ``cv_results_``, or False).
    fit_params : dict, optional
        Passed to every ``fit``; sample-aligned arrays are split with the folds.
    workers : int, WorkerPool, or a list of them
        An int N runs N local workers, threads or processes chosen per search
        (:class:`~hpsearch.AutoWorkers`): the search starts on N threads and moves to
        N warm local processes when its first tasks show the threads taking turns on
        the GIL. ``ThreadWorkers(N)`` (always threads) or ``warm_processes(N)``
        (always the warm processes) fixes the choice. A pool such as
        ``RemoteWorkers`` or ``LocalProcesses`` runs on processes or other machines;
        a list combines them.
    random_state : int, RandomState or None
        Seed of random and Bayesian search.
    progress : bool or None
        Show a progress bar; None shows it when standard error is a terminal.
    verbose : int
        scikit-learn's ``verbose``: >0 prints the number of fits, >1 each fit's
        time, >2 its score too (from the worker that ran it).
    callbacks : sequence of scikit-learn callbacks
        Set on the search (``set_callbacks``), e.g. ``sklearn.callback.ProgressBar()``.
    storage : str or path, optional
        An SQLite file that records the search as it runs (created if needed). Rerun
        the same call after a crash and it resumes: finished fits are not run again
        and the results equal an uninterrupted run's. ``hpsearch status FILE`` and
        ``hpsearch dashboard FILE`` show it while it runs. See :mod:`hpsearch.storage`.
    name : str, optional
        The search's name in ``storage`` (default ``"default"``); one file holds
        several searches. A different search under a stored name is refused.
    prefix_cache : bool or int
        For a :class:`~sklearn.pipeline.Pipeline`: fit the leading steps that
        candidates share once per fold and reuse their output (see
        :mod:`hpsearch.prefix`; scores are those of refitting every candidate). True
        bounds each worker process's cache by the default (1 GiB, at most an eighth of
        the machine's memory), an int by that many bytes; False refits every candidate
        from scratch.
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
    factor, resource, min_resources, max_resources, aggressive_elimination
        The adaptive strategies' settings, as in scikit-learn's ``HalvingGridSearchCV``:
        each step keeps ``1/factor`` of the candidates and gives them ``factor`` times
        more ``resource`` — ``"n_samples"`` (training folds subsampled) or an integer
        parameter of the estimator such as ``n_estimators`` or ``max_iter`` (then
        ``max_resources`` is required). For ``"hyperband"``, ``min_resources`` and
        ``max_resources`` bound every bracket ("exhaust" means "smallest" there).
    asynchronous : bool
        For the adaptive strategies: promote a candidate as soon as it is in the top
        ``1/factor`` of its rung's results so far (ASHA), so no worker waits for a rung
        to finish. Gives up scikit-learn's exact candidates for speed. At the end of
        the search, a slot that would sit idle gets the best configuration not yet
        promoted, one rung up (``cv_results_["idle_promotion"]`` marks those).
    incremental : bool
        For the adaptive strategies with an iteration resource (``max_iter``,
        ``n_estimators``): a promoted candidate continues training from the model it
        had at the previous rung instead of starting again (see
        :mod:`hpsearch.incremental`). An estimator with ``partial_fit`` is trained by
        ``partial_fit`` calls, one per unit of resource on the whole training fold
        (dask-ml's meaning of ``max_iter``); otherwise one with ``warm_start`` is
        fitted again with ``warm_start=True``. The result then has ``history_`` and
        ``model_history_`` as dask-ml's ``HyperbandSearchCV``; every adaptive search
        has them. The refit is a plain ``fit`` with the best parameters.
    prune : bool or PairedPruner
        Skip the remaining folds of a candidate once a paired comparison of its
        completed folds with the best candidate's on the same folds shows it is worse
        (see :class:`~hpsearch.scheduler.pruning.PairedPruner`). Pruned candidates keep
        their completed fold scores, nan elsewhere (so a nan mean and the last rank),
        and ``cv_results_["pruned"]`` marks them.

    Returns
    -------
    SearchResult
        ``cv_results_``, ``best_params_``, ``best_score_``, ``best_estimator_``, ...

    Raises
    ------
    TypeError, ValueError
        Before any fit, for a bad space or argument: scikit-learn's exceptions and
        messages where scikit-learn checks the same thing (``ParameterGrid``,
        ``ParameterSampler``, scorers, ``refit``), else
        :class:`~hpsearch.errors.InvalidParameterError` (a scikit-learn
        ``InvalidParameterError``: both a ``ValueError`` and a ``TypeError``) or
        :class:`~hpsearch.errors.SearchSpaceError`.
    FitFailedError
        When every fit failed (a ``ValueError`` with scikit-learn's message, which
        holds the tracebacks).

    Whatever ends a search early — Ctrl-C (KeyboardInterrupt), a failed fit with
    ``error_score="raise"``, :class:`~hpsearch.errors.NoWorkersError` when every remote
    worker is gone — keeps the candidates completed so far: the exception's
    ``partial_result`` is a :class:`SearchResult` of them (without refit). So does a
    refit that raises (the refit callable, or the final fit): its exception's
    ``partial_result`` holds every candidate.

    Notes
    -----
    Stragglers: when a worker has nothing to do and nothing is queued, a task that
    has run (or waited in a worker's queue) longer than 3 times the median duration
    of the search's finished tasks, and at least 0.5 s, is started again on that
    worker; the first result wins. A worker that slows down mid-search so does not
    hold up the end of the search.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from hpsearch import run_search
    >>> X, y = load_iris(return_X_y=True)
    >>> result = run_search(SVC(), {"C": [0.1, 1, 10]}, X, y, cv=3, workers=2, progress=False)
    >>> result.best_params_
    {'C': 10}
    >>> round(float(result.best_score_), 3)
    0.973
    """
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise InvalidParameterError(
            f"estimator must be a scikit-learn compatible estimator with fit and get_params, got {estimator!r}"
        )
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
    if incremental and not (isinstance(strategy, str) and strategy in adaptive.ADAPTIVE_STRATEGIES):
        raise InvalidParameterError(
            f"incremental=True continues candidates promoted to more resource, which only the adaptive "
            f"strategies do; use strategy='hyperband', 'halving' or 'halving_random' (got {strategy!r})"
        )
    check_workers(workers)
    adaptive.check_prune(prune)  # folds dropped early, any strategy; the search uses it
    _check_scoring(scoring)
    _check_data(X, y, groups)
    if storage is not None:
        from .storage import check_storage

        check_storage(storage, name)  # the search checks it again; here before any other work
    prefix_config = make_prefix_config(prefix_cache, estimator, space)
    common = dict(
        scoring=scoring, refit=refit, cv=cv, error_score=error_score,
        return_train_score=return_train_score, workers=workers, verbose=verbose, prune=prune, storage=storage, name=name,
    )
    search: Any
    if isinstance(strategy, str):
        if strategy == "grid":
            grid = _grid_spec(space)
            ParameterGrid(grid)  # scikit-learn's checks of a grid, before any work
            search = GridSearchCV(estimator, grid, **common)
        elif strategy == "random":
            distributions = _sampler_spec(space)
            ParameterSampler(distributions, check_n_iter(n_iter))  # its checks, before any work
            search = RandomizedSearchCV(estimator, distributions, n_iter=cast(int, n_iter), random_state=random_state, **common)
        elif strategy == "bayes":
            check_n_iter(n_iter)
            search = BayesSearchCV(
                estimator, _bayes_spec(space), n_iter=cast(int, n_iter), random_state=random_state, n_points=None, **common
            )
            search._strategies()  # the space's checks, before any work
        elif strategy not in adaptive.ADAPTIVE_STRATEGIES:
            raise InvalidParameterError(
                f"unknown strategy {strategy!r}; use one of {list(_STRATEGIES)} or a Strategy object"
            )
        if strategy in adaptive.ADAPTIVE_STRATEGIES:
            from .adaptive_cv import AdaptiveSearchCV

            search = AdaptiveSearchCV(
                estimator, space, strategy, n_iter=n_iter, factor=factor, resource=resource,
                min_resources=min_resources, max_resources=max_resources,
                aggressive_elimination=aggressive_elimination, asynchronous=asynchronous,
                incremental=incremental,
                random_state=random_state, **common,
            )
            search._check_options()  # before any work
    elif isinstance(strategy, Strategy):
        search = StrategySearchCV(estimator, strategy, **common)
    else:
        raise InvalidParameterError(
            f"strategy must be one of {list(_STRATEGIES)} or an object with ask, tell, finished "
            f"and total, got {strategy!r}"
        )
    params = dict(fit_params or {})
    if groups is not None:
        params["groups"] = groups
    if callbacks:
        search.set_callbacks(*callbacks)
    bar = _ProgressBar.maybe(progress)
    search._hpsearch_on_candidate = None if bar is None else bar.update
    search._hpsearch_prefix_cache = prefix_config
    search._hpsearch_fit_timeout = None if fit_timeout is None else float(fit_timeout)
    search._hpsearch_max_task_deaths = int(max_task_deaths)
    try:
        search.fit(X, y, **params)
    finally:
        if bar is not None:
            bar.close()
    result = SearchResult.from_search(search)
    for attribute, value in getattr(search, "adaptive_attributes_", {}).items():
        setattr(result, attribute, value)
    return result


# -- argument checks -------------------------------------------------------------------


def _grid_spec(space: SpaceSpec) -> Any:
    """The space as a scikit-learn ``param_grid``: hpsearch's enumerable dimensions
    become lists; anything else is left for ``ParameterGrid`` to check."""
    if isinstance(space, Space):
        space.check_grid()
        return [{n: d.grid_values() for n, d in sub.items()} for sub in space.subspaces]

    def convert(sub: Any) -> Any:
        if not isinstance(sub, Mapping):
            return sub
        out = {}
        for name, value in sub.items():
            if isinstance(value, Dimension):
                if not value.enumerable:
                    raise SearchSpaceError(
                        f"grid search cannot enumerate parameter {name!r} = {value!r}: it is continuous. "
                        "Give a list of values instead, or use strategy='random' or 'bayes'"
                    )
                value = value.grid_values()
            out[name] = value
        return out

    if isinstance(space, Mapping):
        return convert(space)
    if isinstance(space, Sequence) and not isinstance(space, (str, bytes)):
        return [convert(sub) for sub in space]
    return space


def _sampler_spec(space: SpaceSpec) -> Any:
    """The space as ``param_distributions``: a Categorical is a list (sampled like
    one), other hpsearch dimensions are distributions (they have ``rvs``)."""
    if isinstance(space, Space):
        return space.sampler_spec()

    def convert(sub: Any) -> Any:
        if not isinstance(sub, Mapping):
            return sub
        return {n: list(v.choices) if isinstance(v, Categorical) else v for n, v in sub.items()}

    if isinstance(space, Mapping):
        return convert(space)
    if isinstance(space, Sequence) and not isinstance(space, (str, bytes)):
        return [convert(sub) for sub in space]
    return space


def _bayes_spec(space: SpaceSpec) -> Any:
    if isinstance(space, Space):
        return [dict(sub) for sub in space.subspaces]
    if isinstance(space, Sequence) and not isinstance(space, (str, bytes)):
        return list(space)
    return space


def _check_data(X: Any, y: Any, groups: Any) -> None:
    try:
        check_consistent_length(X, y, groups)
    except ValueError as exc:
        raise InvalidParameterError(
            f"X, y and groups must have the same number of samples: {exc}"
        ) from None


def _check_scoring(scoring: Any) -> None:
    """Scorer names that do not exist, refused with the valid ones listed."""
    names: list[Any] = []
    if isinstance(scoring, str):
        names = [scoring]
    elif isinstance(scoring, (list, tuple, set)):
        names = list(scoring)
    elif isinstance(scoring, Mapping):
        names = [v for v in scoring.values() if isinstance(v, str)]
    valid = set(get_scorer_names())
    for name in names:
        if isinstance(name, str) and name not in valid:
            raise InvalidParameterError(
                f"unknown scorer {name!r}; valid names are listed by "
                f"sklearn.metrics.get_scorer_names(): {sorted(valid)!r}"
            )


class _ProgressBar:
    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=None, unit="fit", desc="hpsearch", dynamic_ncols=True)

    @classmethod
    def maybe(cls, progress: bool | None) -> _ProgressBar | None:
        if progress is None:
            progress = sys.stderr.isatty()
        return cls() if progress else None

    def update(self, progress: SearchProgress) -> None:
        if progress.tasks_total is not None and self._bar.total != progress.tasks_total:
            self._bar.total = progress.tasks_total
        self._bar.update(progress.tasks_done - self._bar.n)
        if progress.best_score != float("-inf"):
            self._bar.set_postfix(best=f"{progress.best_score:.4f}", refresh=False)

    def close(self) -> None:
        self._bar.close()
