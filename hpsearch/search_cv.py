"""scikit-learn's search estimators, fitting on hpsearch workers.

:class:`GridSearchCV` and :class:`RandomizedSearchCV` are scikit-learn's classes
(they subclass them), :class:`BayesSearchCV` takes scikit-optimize's arguments; all
three add ``workers=``. Everything but where the fits run is scikit-learn's own
code: parameter validation, scorers, metadata routing, callbacks, ``verbose``,
``cv_results_``, refit, ``predict``/``score``/..., ``clone``, the HTML repr.

How a search class is made (the pattern to follow for any other one):

1. Put :class:`SearchCVMixin` first among the bases, then the scikit-learn class
   (``class GridSearchCV(SearchCVMixin, sklearn.model_selection.GridSearchCV)``).
   The mixin's ``fit`` is ``BaseSearchCV.fit`` with the joblib loop replaced by
   hpsearch's scheduler (:class:`hpsearch._engine.CandidateEvaluator`), so the
   parent's ``_run_search`` — which calls ``evaluate_candidates(candidates, cv=...,
   more_results=...)`` once or several times — runs unchanged.
2. Repeat the parent's ``__init__`` signature and add ``workers=None``; add
   ``"workers": "no_validation"`` to ``_parameter_constraints``.
3. A parent that overrides ``fit`` around ``BaseSearchCV.fit`` (successive halving
   does, to record the number of samples first) gets a ``fit`` that does the same
   around ``SearchCVMixin.fit``.
4. A strategy that proposes candidates as scores arrive (Bayesian search) calls
   ``evaluate_candidates.run_strategy(strategy, callback_ctx=...)`` from its
   ``_run_search`` instead of building the candidate list first.
"""

from __future__ import annotations

import copy
import logging
import numbers
import random
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
from sklearn.base import _fit_context, clone, is_classifier
from sklearn.metrics._scorer import _BaseScorer, _MultimetricScorer, _PassthroughScorer
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import ParameterSampler
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.model_selection._search import BaseSearchCV
from sklearn.model_selection._split import check_cv
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_method_params, indexable

from ._engine import CandidateEvaluator, EvaluationSetup, WorkersSpec, check_workers, make_pools
from .errors import InvalidParameterError
from .prefix import make_prefix_config
from .space import Categorical, Integer, Real, Space
from .strategies.base import Strategy

logger = logging.getLogger(__name__)

__all__ = ["BayesSearchCV", "GridSearchCV", "RandomizedSearchCV", "SearchCVMixin"]

_WORKERS_DOC = """workers : int, WorkerPool, list of them, or None, default=None
        Where the fits run. An int N runs N local workers, threads or processes
        chosen per search (:class:`~hpsearch.AutoWorkers`: threads, moved to N warm
        local processes when the fits hold the GIL); ``ThreadWorkers(n)`` or
        ``warm_processes(n)`` fixes the choice; a pool such as ``LocalProcesses(n)``
        or ``RemoteWorkers(address)`` runs them in processes or on other machines; a
        list combines them. None runs ``n_jobs`` local workers as an int does (None:
        the calling thread, -1: one per core; threads under
        ``joblib.parallel_config(backend="threading")``). Clones of the search share
        the pools given here.
    prune : bool or PairedPruner, default=False
        Skip the remaining folds of a candidate once a paired comparison of its
        completed folds with the best candidate's on the same folds shows it is
        worse (:class:`~hpsearch.PairedPruner`; True is ``PairedPruner()``). Its
        skipped folds are nan in ``cv_results_``, and ``cv_results_["pruned"]``
        marks it."""

#: The ``storage`` and ``name`` parameters, as every search class documents them.
STORAGE_DOC = """storage : str or path, default=None
        An SQLite file that records the search as it runs (created if needed; see
        :mod:`hpsearch.storage`). Fitting again with the same storage and ``name`` —
        this instance, a new one, or the same script after a crash — resumes: fits
        whose results are stored are not run again, and ``cv_results_`` equal an
        uninterrupted run's. A search whose definition (estimator, space, settings,
        seed, CV splits, data, scoring) differs from the one stored under ``name`` is
        refused before any fit, with what differs. With ``random_state=None`` a seed
        is drawn the first time and stored, and reruns use it (``random_state``
        itself stays None). ``hpsearch status FILE`` and ``hpsearch dashboard
        FILE`` show the search while it runs. None: nothing is recorded.
    name : str, default=None
        The search's name in ``storage`` (None: ``"default"``); one file holds
        several searches. Clones share the name: give each search fitted on other
        data (an outer cross-validation) its own."""


#: ``storage`` is checked by hpsearch (:func:`hpsearch.storage.check_storage`: a path in
#: a writable directory, a file that is hpsearch's); ``name`` by scikit-learn's rules.
_STORAGE_CONSTRAINTS: dict[str, Any] = {"storage": "no_validation", "name": [str, None]}


class SearchCVMixin:
    """Runs a scikit-learn ``BaseSearchCV`` subclass's fits on hpsearch workers.

    With ``storage`` set, ``fit`` records the search in a journal and resumes a stored
    one: each class names its space and settings for the journal
    (:meth:`_journal_definition`) and draws its random numbers from
    :meth:`_fit_random_state`, the seed stored for ``random_state=None``.
    """

    workers: WorkersSpec
    storage: Any = None
    name: str | None = None
    _hpsearch_on_candidate: Any = None  # run_search's progress bar
    # run_search's prefix reuse; the classes reuse prefixes with the default cache (a
    # Pipeline's shared leading steps fitted once per fold)
    _hpsearch_prefix_cache: Any = "default"
    # the seed drawn (or read back from storage) for random_state=None, during fit
    _hpsearch_seed: int | None = None
    # run_search's time limit per fit and deaths a task may survive
    _hpsearch_fit_timeout: float | None = None
    _hpsearch_max_task_deaths: int = 3

    @_fit_context(prefer_skip_nested_validation=False)  # *SearchCV.estimator is not validated yet
    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run fit with all sets of parameters, on the search's workers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, n_samples)
            Training vectors (a precomputed kernel or distance matrix for pairwise
            estimators).
        y : array-like of shape (n_samples,) or (n_samples, n_output), default=None
            Target; None for unsupervised learning.
        **params : dict of str -> object
            Parameters for the estimator's ``fit``, the scorer and the CV splitter
            (``groups``), as in scikit-learn.

        Returns
        -------
        self : object
            The fitted search.
        """
        search: Any = self
        check_workers(search.workers)
        search._fit_pruner()  # a bad prune is refused before any work
        open_journal = search._journal_opener()  # storage checked before anything else
        scorers, refit_metric = search._get_scorers()

        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed_params = search._get_routed_params_for_fit(params)

        if (sample_weight := params.get("sample_weight")) is not None:
            metadata_callbacks = {"sample_weight": sample_weight}
        else:
            metadata_callbacks = None
        root_callback_ctx = search._init_callback_context(
            max_subtasks=1 + (search.refit is not False)
        ).call_on_fit_task_begin(estimator=search, X=X, y=y, metadata=metadata_callbacks)

        search._checked_cv_orig = check_cv(search.cv, y, classifier=is_classifier(search.estimator))
        search._check_input_parameters(X=X, y=y, split_params=routed_params.splitter.split)
        search.n_splits_ = search._checked_cv_orig.get_n_splits(X, y, **routed_params.splitter.split)

        pruner = search._fit_pruner()
        base_estimator = clone(search.estimator)
        pools, owned = make_pools(search.workers, search.n_jobs)
        evaluate_candidates = CandidateEvaluator(
            EvaluationSetup(
                search=search,
                base_estimator=base_estimator,
                X=X,
                y=y,
                scorers=scorers,
                score_names=_score_names(scorers),
                routed_params=routed_params,
                pools=pools,
                on_candidate=search._hpsearch_on_candidate,
                prefix_cache=_prefix_config(search),
                open_journal=open_journal,
                fit_timeout=search._hpsearch_fit_timeout,
                max_task_deaths=search._hpsearch_max_task_deaths,
                pruner=pruner,
            )
        )
        try:
            search._run_search(evaluate_candidates, callback_ctx=root_callback_ctx)
        finally:
            for pool in owned:
                pool.stop()
        results = evaluate_candidates.results
        self._fit_failures = evaluate_candidates.fit_failures

        # multimetric is known only now for a callable scoring
        first_test_score = evaluate_candidates.out[0]["test_scores"]
        search.multimetric_ = isinstance(first_test_score, dict)
        if callable(search.scoring) and search.multimetric_:
            search._check_refit_for_multimetric(first_test_score)
            refit_metric = search.refit

        try:
            if search.refit or not search.multimetric_:
                search.best_index_ = search._select_best_index(search.refit, refit_metric, results)
                if not callable(search.refit):
                    search.best_score_ = results[f"mean_test_{refit_metric}"][search.best_index_]
                search.best_params_ = results["params"][search.best_index_]

            if search.refit:
                # the parameters are cloned too: they may be estimators (pipeline steps)
                search.best_estimator_ = clone(base_estimator).set_params(
                    **clone(search.best_params_, safe=False)
                )
                refit_subctx = root_callback_ctx.subcontext(task_name="refit-with-best-params")
                with refit_subctx.propagate_callback_context(search.best_estimator_):
                    refit_subctx.call_on_fit_task_begin(estimator=search, X=X, y=y, metadata=metadata_callbacks)
                    refit_start_time = time.time()
                    if y is not None:
                        search.best_estimator_.fit(X, y, **routed_params.estimator.fit)
                    else:
                        search.best_estimator_.fit(X, **routed_params.estimator.fit)
                    refit_end_time = time.time()
                search.refit_time_ = refit_end_time - refit_start_time
                if hasattr(search.best_estimator_, "feature_names_in_"):
                    search.feature_names_in_ = search.best_estimator_.feature_names_in_
                refit_subctx.call_on_fit_task_end(estimator=search, X=X, y=y, metadata=metadata_callbacks)

        except BaseException as exc:  # a refit callable or the refit itself raised
            _keep_every_result(exc, search, results, self._fit_failures)
            raise
        search.scorer_ = scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers
        search.cv_results_ = results
        root_callback_ctx.call_on_fit_task_end(estimator=search, X=X, y=y, metadata=metadata_callbacks)
        return search

    def _fit_pruner(self) -> Any:
        """The pruner of this fit (``prune`` checked): a PairedPruner, or None."""
        from .adaptive import check_prune

        return check_prune(getattr(self, "prune", False))

    # -- storage ------------------------------------------------------------------------

    def _journal_definition(self) -> tuple[Any, Any, bool]:
        """What the journal records of this search: its space (an object with
        ``subspaces``), its strategy (a text naming it with the settings that change
        its candidates, or the strategy object), and whether it draws random numbers
        (then ``random_state=None`` gets a stored seed)."""
        raise NotImplementedError(f"{type(self).__name__} cannot record its search in storage")

    def _fit_random_state(self) -> Any:
        """The ``random_state`` this fit draws from: the seed stored for
        ``random_state=None`` with storage, else the parameter (never changed)."""
        seed = self._hpsearch_seed
        return getattr(self, "random_state", None) if seed is None else seed

    def _journal_opener(self) -> Any:
        """``open_journal(context)`` for the engine, or None without storage.

        Checks ``storage`` and ``name`` first, and settles the seed of a search that
        draws random numbers with ``random_state=None``: the one stored under
        ``name``, or a new one (stored when the journal opens).
        """
        self._hpsearch_seed = None
        storage, name = self.storage, self.name
        if storage is None:
            if name is not None:
                raise InvalidParameterError(f"name={name!r} needs storage=: the file the search is recorded in")
            return None
        from .storage import DEFAULT_NAME, check_storage, open_search_journal, stored_seed
        from .storage.fingerprint import describe

        check_storage(storage, name)
        space, strategy, draws = self._journal_definition()
        random_state = getattr(self, "random_state", None)
        seed = None
        if draws and random_state is None:
            seed = stored_seed(storage, name)
            if seed is None:
                seed = random.SystemRandom().randrange(2**31 - 1)
            self._hpsearch_seed = seed
        pruner = self._fit_pruner()
        if pruner is not None and isinstance(strategy, str):
            strategy = f"{strategy}, pruned by {describe(pruner)}"
        opened = 0

        def open_journal(context: Any) -> Any:
            # A search that runs several strategies one after the other (BayesSearchCV
            # with several sub-spaces) records each under a name of its own.
            nonlocal opened
            opened += 1
            part = name if opened == 1 else f"{name or DEFAULT_NAME} (part {opened})"
            return open_search_journal(storage, part, context, space, strategy, random_state, seed=seed)

        return open_journal

    def __sklearn_clone__(self) -> Any:
        """scikit-learn's clone, except that worker pools (live resources) are shared."""
        search: Any = self
        params = search.get_params(deep=False)
        new_params = {k: v if k == "workers" else clone(v, safe=False) for k, v in params.items()}
        new: Any = type(self)(**new_params)
        if hasattr(search, "_metadata_request"):
            new._metadata_request = clone(search._metadata_request)
        if hasattr(search, "_skl_callbacks"):
            new._skl_callbacks = search._skl_callbacks
        if hasattr(search, "_sklearn_output_config"):
            new._sklearn_output_config = copy.deepcopy(search._sklearn_output_config)
        return new

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without worker pools (sockets and threads cannot be pickled): an
        unpickled search has ``workers=None``, or only the ints it was given."""
        state: dict[str, Any] = super().__getstate__()  # type: ignore[misc]
        workers = state.get("workers")
        if workers is not None and not _only_ints(workers):
            kept = [w for w in workers if _only_ints(w)] if isinstance(workers, (list, tuple)) else []
            state["workers"] = kept or None
        return state


def _keep_every_result(exc: BaseException, search: Any, results: dict[str, Any], failures: list[str]) -> None:
    """Give the error of a refit that raised a ``partial_result`` of every candidate
    (with the best one, unless choosing it is what raised); never hide the error."""
    from .results import SearchResult

    try:
        try:
            partial = SearchResult.from_results(search, results, fit_failures=failures)
        except Exception:  # a refit callable that raises: the results, without best_*
            partial = SearchResult.from_results(search, results, fit_failures=failures, best=False)
        exc.partial_result = partial  # type: ignore[attr-defined]
    except Exception:
        logger.debug("no partial result", exc_info=True)


def _only_ints(workers: Any) -> bool:
    items = workers if isinstance(workers, (list, tuple)) else [workers]
    return all(isinstance(w, numbers.Integral) for w in items)


def _prefix_config(search: Any) -> Any:
    config = search._hpsearch_prefix_cache
    if isinstance(config, str) and config == "default":
        space = next(
            (getattr(search, a) for a in ("param_grid", "param_distributions", "search_spaces") if hasattr(search, a)),
            None,
        )
        return make_prefix_config(True, search.estimator, space)
    return config


def _score_names(scorers: Any) -> dict[str, Any]:
    """The names results carry: ``score`` for one metric, the metrics' names, or none
    yet for a callable scoring (it may return a dict)."""
    if isinstance(scorers, _MultimetricScorer):
        return dict(scorers._scorers)
    if isinstance(scorers, (_BaseScorer, _PassthroughScorer)):
        return {"score": scorers}
    return {}


class GridSearchCV(SearchCVMixin, _SkGridSearchCV):
    """Exhaustive search over a parameter grid: scikit-learn's ``GridSearchCV``,
    fitting on hpsearch workers.

    Every parameter, attribute and method is scikit-learn's
    (:class:`sklearn.model_selection.GridSearchCV`); ``workers``, ``prune``, ``storage`` and
    ``name`` are added.

    Parameters
    ----------
    estimator, param_grid, scoring, n_jobs, refit, cv, verbose, pre_dispatch, error_score, return_train_score
        As in scikit-learn. ``n_jobs`` is the number of local workers when
        ``workers`` is None (see ``workers``); ``pre_dispatch`` is accepted and not used (hpsearch
        queues tasks by each worker's free slots).
    {workers}
    {storage}

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from hpsearch import GridSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> search = GridSearchCV(SVC(), {{"C": [0.1, 1, 10]}}, cv=3, workers=2).fit(X, y)
    >>> search.best_params_
    {{'C': 10}}
    >>> round(float(search.best_score_), 3)
    0.973

    Recorded in a storage file, a second fit of the same search resumes it (here:
    every fit is stored, so none runs again):

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "search.db")
    >>> first = GridSearchCV(SVC(), {{"C": [0.1, 1, 10]}}, cv=3, storage=path, name="svc").fit(X, y)
    >>> again = GridSearchCV(SVC(), {{"C": [0.1, 1, 10]}}, cv=3, storage=path, name="svc").fit(X, y)
    >>> again.best_params_, list(again.cv_results_["mean_test_score"]) == list(first.cv_results_["mean_test_score"])
    ({{'C': 10}}, True)
    """

    _parameter_constraints: dict = {
        **_SkGridSearchCV._parameter_constraints, **_STORAGE_CONSTRAINTS, "workers": "no_validation",
        "prune": "no_validation",
    }

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
        workers: WorkersSpec = None,
        prune: Any = False,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            estimator=estimator,
            param_grid=param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.workers = workers
        self.storage = storage
        self.name = name
        self.prune = prune

    def _journal_definition(self) -> tuple[Any, Any, bool]:
        return journal_space(self.param_grid), "grid", False


class RandomizedSearchCV(SearchCVMixin, _SkRandomizedSearchCV):
    """Randomized search on hyperparameters: scikit-learn's ``RandomizedSearchCV``,
    fitting on hpsearch workers.

    Every parameter, attribute and method is scikit-learn's
    (:class:`sklearn.model_selection.RandomizedSearchCV`); ``workers``, ``prune``, ``storage``
    and ``name`` are added.
    hpsearch's :class:`~hpsearch.Real` and :class:`~hpsearch.Integer` work as
    distributions.

    Parameters
    ----------
    estimator, param_distributions, n_iter, scoring, n_jobs, refit, cv, verbose, pre_dispatch, random_state, error_score, return_train_score
        As in scikit-learn (``n_jobs`` and ``pre_dispatch``: see :class:`GridSearchCV`).
    {workers}
    {storage}

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from hpsearch import RandomizedSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> search = RandomizedSearchCV(LogisticRegression(max_iter=1000), {{"C": loguniform(1e-2, 1e2)}},
    ...                             n_iter=4, cv=3, random_state=0, workers=2).fit(X, y)
    >>> len(search.cv_results_["params"])
    4
    """

    _parameter_constraints: dict = {
        **_SkRandomizedSearchCV._parameter_constraints, **_STORAGE_CONSTRAINTS, "workers": "no_validation",
        "prune": "no_validation",
    }

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_iter: int = 10,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        random_state: Any = None,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        workers: WorkersSpec = None,
        prune: Any = False,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            estimator=estimator,
            param_distributions=param_distributions,
            n_iter=n_iter,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            random_state=random_state,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.workers = workers
        self.storage = storage
        self.name = name
        self.prune = prune

    def _journal_definition(self) -> tuple[Any, Any, bool]:
        return journal_space(self.param_distributions), f"random(n_iter={self.n_iter})", True

    def _run_search(self, evaluate_candidates: Any, *, callback_ctx: Any = None) -> None:
        """scikit-learn's, drawing from the stored seed when ``random_state`` is None
        with storage (see :meth:`SearchCVMixin._fit_random_state`)."""
        candidate_params = ParameterSampler(
            self.param_distributions, self.n_iter, random_state=self._fit_random_state()
        )
        search_ctx = callback_ctx.subcontext(
            task_name="search",
            max_subtasks=len(candidate_params) * self.n_splits_,
            sequential_subtasks=False,
        ).call_on_fit_task_begin(estimator=self)
        evaluate_candidates(candidate_params, callback_ctx=search_ctx)
        search_ctx.call_on_fit_task_end(estimator=self)


def journal_space(space: Any) -> Any:
    """A space (``param_grid``, ``param_distributions``) as the storage journal
    describes it: an object with ``subspaces``. The search itself checks the space.

    Examples
    --------
    >>> journal_space({"C": [1, 10]}).subspaces[0]
    {'C': Categorical(choices=(1, 10))}
    """
    if isinstance(space, Space):
        return space
    try:
        return Space.from_spec(space)
    except Exception:  # a space only scikit-learn accepts (a scipy distribution): as given
        subs = [space] if isinstance(space, Mapping) else list(space)
        return SimpleNamespace(subspaces=[dict(sub) for sub in subs])


GridSearchCV.__doc__ = (GridSearchCV.__doc__ or "").format(workers=_WORKERS_DOC, storage=STORAGE_DOC)
RandomizedSearchCV.__doc__ = (RandomizedSearchCV.__doc__ or "").format(workers=_WORKERS_DOC, storage=STORAGE_DOC)


# -- Bayesian search ----------------------------------------------------------------------

_OPTIMIZER_KWARGS = {"n_initial_points", "base_estimator", "acq_func"}


def _from_skopt(name: str, value: Any) -> Any:
    """A scikit-optimize dimension or shorthand as hpsearch's; anything else as is."""
    module = type(value).__module__ or ""
    if module.startswith("skopt"):
        kind = type(value).__name__
        if kind == "Real":
            return Real(float(value.low), float(value.high), prior=value.prior)
        if kind == "Integer":
            return Integer(int(value.low), int(value.high), prior=value.prior)
        if kind == "Categorical":
            return Categorical(list(value.categories))
        raise InvalidParameterError(
            f"search_spaces: parameter {name!r} is a scikit-optimize {kind}; use Real, Integer "
            "or Categorical (from hpsearch or skopt.space)"
        )
    if isinstance(value, tuple) and len(value) in (2, 3) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value[:2]
    ):
        prior = value[2] if len(value) == 3 else "uniform"
        if all(isinstance(v, numbers.Integral) for v in value[:2]):
            return Integer(int(value[0]), int(value[1]), prior=prior)
        return Real(float(value[0]), float(value[1]), prior=prior)
    return value


def _bayes_subspaces(search_spaces: Any, n_iter: int) -> list[tuple[Space, int]]:
    """``search_spaces`` as (space, n_iter) pairs, scikit-optimize's way: a dict, or a
    list of dicts and ``(dict, n_iter)`` tuples, each searched in turn."""
    items = search_spaces if isinstance(search_spaces, list) else [search_spaces]
    if not items:
        raise InvalidParameterError("search_spaces is an empty list; give a dict of parameter -> dimension")
    pairs = []
    for item in items:
        space_n = n_iter
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], numbers.Integral) or item[1] < 1:
                raise InvalidParameterError(
                    f"search_spaces: a tuple must be (dict, n_iter) with n_iter >= 1, got {item!r}"
                )
            item, space_n = item
        if not isinstance(item, Mapping):
            raise InvalidParameterError(
                f"search_spaces must be a dict, or a list of dicts and (dict, n_iter) tuples; got {item!r}"
            )
        converted = {name: _from_skopt(name, value) for name, value in item.items()}
        pairs.append((Space.from_spec(converted).for_bayes(), int(space_n)))
    return pairs


class BayesSearchCV(SearchCVMixin, BaseSearchCV):
    """Bayesian optimisation over hyperparameters: scikit-optimize's ``BayesSearchCV``
    arguments, scikit-learn's search semantics, fitting on hpsearch workers.

    Parameters
    ----------
    estimator : estimator object
        The estimator to tune (any scikit-learn compatible estimator or pipeline).
    search_spaces : dict, or list of dicts and (dict, n_iter) tuples
        Parameter name -> :class:`~hpsearch.Real`, :class:`~hpsearch.Integer`,
        :class:`~hpsearch.Categorical` (or scikit-optimize's), a list of values, a
        ``(low, high)`` or ``(low, high, prior)`` tuple, or a ``scipy.stats``
        uniform / loguniform. Several sub-spaces are searched one after the other,
        each for its own ``n_iter``.
    optimizer_kwargs : dict, default=None
        ``n_initial_points`` (default 10), ``base_estimator`` ("GP", "RF" or "ET")
        and ``acq_func`` ("gp_hedge", "EI", "LCB", "PI"), as in scikit-optimize.
    n_iter : int, default=50
        Candidates per sub-space.
    scoring, refit, cv, verbose, error_score, return_train_score
        As in scikit-learn's ``GridSearchCV``.
    fit_params : dict, default=None
        Passed to every ``fit`` (scikit-optimize's deprecated way; prefer ``fit(X, y, **params)``).
    n_jobs : int, default=1
        Local workers when ``workers`` is None (-1: one per core; see ``workers``).
    n_points : int or None, default=1
        Candidates proposed together, each batch once the previous one is scored
        (scikit-optimize's meaning; more keep more workers busy). None lets hpsearch
        choose (5).
    iid, pre_dispatch
        Accepted for compatibility with scikit-optimize; not used.
    random_state : int, RandomState or None, default=None
        Seed of the optimizer: with an int, the candidates do not depend on the
        workers.
    {workers}
    {storage}

    Attributes
    ----------
    cv_results_, best_estimator_, best_score_, best_params_, best_index_, scorer_, n_splits_, refit_time_, multimetric_
        As in scikit-learn's ``GridSearchCV``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from hpsearch import BayesSearchCV, Real
    >>> X, y = load_iris(return_X_y=True)
    >>> search = BayesSearchCV(SVC(), {{"C": Real(1e-2, 1e2, prior="log-uniform")}}, n_iter=6,
    ...                        optimizer_kwargs={{"n_initial_points": 3}}, cv=3,
    ...                        random_state=0, workers=2).fit(X, y)
    >>> len(search.cv_results_["params"])
    6
    """

    _parameter_constraints: dict = {
        **BaseSearchCV._parameter_constraints,
        "search_spaces": [dict, list],
        "optimizer_kwargs": [dict, None],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "fit_params": [dict, None],
        "n_points": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "iid": "no_validation",
        "random_state": ["random_state"],
        "workers": "no_validation",
        "prune": "no_validation",
        **_STORAGE_CONSTRAINTS,
    }

    def __init__(
        self,
        estimator: Any,
        search_spaces: Any,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_iter: int = 50,
        scoring: Any = None,
        fit_params: dict[str, Any] | None = None,
        n_jobs: int | None = 1,
        n_points: int | None = 1,
        iid: Any = "deprecated",
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        random_state: Any = None,
        error_score: Any = "raise",
        return_train_score: bool = False,
        workers: WorkersSpec = None,
        prune: Any = False,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        self.search_spaces = search_spaces
        self.optimizer_kwargs = optimizer_kwargs
        self.n_iter = n_iter
        self.fit_params = fit_params
        self.n_points = n_points
        self.iid = iid
        self.random_state = random_state
        self.workers = workers
        self.storage = storage
        self.name = name
        self.prune = prune
        super().__init__(
            estimator=estimator,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run the Bayesian search, then refit the best candidate (see
        :meth:`SearchCVMixin.fit`); ``fit_params`` given to the constructor are
        passed on with ``params``."""
        if self.fit_params:
            params = {**self.fit_params, **params}
        return super().fit(X, y, **params)

    def _strategies(self) -> list[Strategy]:
        from .strategies.bayes import BayesStrategy

        kwargs = dict(self.optimizer_kwargs or {})
        unknown = set(kwargs) - _OPTIMIZER_KWARGS
        if unknown:
            raise InvalidParameterError(
                f"optimizer_kwargs: unknown key(s) {sorted(unknown)}; hpsearch's optimizer takes "
                f"{sorted(_OPTIMIZER_KWARGS)}"
            )
        surrogate = kwargs.pop("base_estimator", "GP")
        if not isinstance(surrogate, str):
            raise InvalidParameterError(
                f"optimizer_kwargs['base_estimator'] must be 'GP', 'RF' or 'ET', got {surrogate!r}"
            )
        rng = check_random_state(self._fit_random_state())
        strategies: list[Strategy] = []
        for space, n_iter in _bayes_subspaces(self.search_spaces, self.n_iter):
            seed = int(rng.randint(np.iinfo(np.int32).max))
            strategies.append(BayesStrategy(
                space, n_iter, random_state=seed, surrogate=surrogate.upper(),
                batch_size=self.n_points, **kwargs,
            ))
        return strategies

    def _journal_definition(self) -> tuple[Any, Any, bool]:
        from .storage.fingerprint import describe

        pairs = _bayes_subspaces(self.search_spaces, self.n_iter)
        space = SimpleNamespace(subspaces=[sub for sub_space, _ in pairs for sub in sub_space.subspaces])
        n_iter = pairs[0][1] if len(pairs) == 1 else [n for _, n in pairs]
        text = (
            f"bayes(n_iter={n_iter}, n_points={self.n_points!r}, "
            f"optimizer_kwargs={describe(dict(self.optimizer_kwargs or {}))})"
        )
        return space, text, True

    def _run_search(self, evaluate_candidates: Any, *, callback_ctx: Any = None) -> None:
        strategies = self._strategies()
        if len(strategies) == 1:  # the callback task tree of GridSearchCV
            _run_strategy(self, evaluate_candidates, strategies[0], callback_ctx, "search")
            return
        # several sub-spaces, one after the other: one "search" task with a child each
        search_ctx = callback_ctx.subcontext(
            task_name="search", max_subtasks=len(strategies), sequential_subtasks=True,
        ).call_on_fit_task_begin(estimator=self)
        for strategy in strategies:
            _run_strategy(self, evaluate_candidates, strategy, search_ctx, "search-subspace")
        search_ctx.call_on_fit_task_end(estimator=self)

    @property
    def total_iterations(self) -> int:
        """Candidates the search evaluates in all (scikit-optimize's attribute)."""
        return sum(n for _, n in _bayes_subspaces(self.search_spaces, self.n_iter))


BayesSearchCV.__doc__ = (BayesSearchCV.__doc__ or "").format(workers=_WORKERS_DOC, storage=STORAGE_DOC)


class StrategySearchCV(SearchCVMixin, BaseSearchCV):
    """A search driven by any :class:`~hpsearch.strategies.base.Strategy` object
    (``ask``/``tell``), with scikit-learn's search semantics; what
    :func:`hpsearch.run_search` uses for ``strategy=<object>``.

    Parameters
    ----------
    estimator, scoring, n_jobs, refit, cv, verbose, pre_dispatch, error_score, return_train_score
        As in :class:`GridSearchCV`.
    strategy : Strategy
        Proposes the candidates (``ask``), learns their scores (``tell``). With
        ``storage``, a resumed search replays the stored asks and tells into the
        strategy given to it, which must propose the same candidates again (a
        deterministic strategy: a fixed seed of its own if it draws random numbers).
    {workers}
    {storage}

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from hpsearch.search_cv import StrategySearchCV
    >>> from hpsearch.strategies import GridStrategy
    >>> X, y = load_iris(return_X_y=True)
    >>> s = StrategySearchCV(DecisionTreeClassifier(random_state=0), GridStrategy({{"max_depth": [1, 3]}}), cv=3)
    >>> s.fit(X, y).best_params_
    {{'max_depth': 3}}
    """

    _parameter_constraints: dict = {
        **BaseSearchCV._parameter_constraints,
        "strategy": "no_validation",
        "workers": "no_validation",
        "prune": "no_validation",
        **_STORAGE_CONSTRAINTS,
    }

    def __init__(
        self,
        estimator: Any,
        strategy: Strategy,
        *,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
        workers: WorkersSpec = None,
        prune: Any = False,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        self.strategy = strategy
        self.workers = workers
        self.prune = prune
        self.storage = storage
        self.name = name
        super().__init__(
            estimator=estimator,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )

    def _journal_definition(self) -> tuple[Any, Any, bool]:
        # the strategy is described as a whole (its class and settings); a seed of its
        # own is part of that description
        space = getattr(self.strategy, "space", None)
        if not hasattr(space, "subspaces"):
            space = SimpleNamespace(subspaces=[])
        return space, self.strategy, False

    def _run_search(self, evaluate_candidates: Any, *, callback_ctx: Any = None) -> None:
        _run_strategy(self, evaluate_candidates, self.strategy, callback_ctx, "search")


StrategySearchCV.__doc__ = (StrategySearchCV.__doc__ or "").format(workers=_WORKERS_DOC, storage=STORAGE_DOC)


def _run_strategy(search: Any, evaluate_candidates: Any, strategy: Strategy, parent_ctx: Any, name: str) -> None:
    """Run ``strategy`` as one callback task (``name``) whose children are the fits."""
    total = strategy.total
    task_ctx = parent_ctx.subcontext(
        task_name=name,
        max_subtasks=None if total is None else total * search.n_splits_,
        sequential_subtasks=False,
        **({} if parent_ctx.sequential_subtasks else {"task_id": 0}),
    ).call_on_fit_task_begin(estimator=search)
    evaluate_candidates.run_strategy(strategy, callback_ctx=task_ctx)
    task_ctx.call_on_fit_task_end(estimator=search)
