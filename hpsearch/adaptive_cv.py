"""Drop-in adaptive search estimators: ``HalvingGridSearchCV``, ``HalvingRandomSearchCV``
and ``HyperbandSearchCV``.

The Halving classes subclass scikit-learn's own, so they take the same constructor
arguments, validate them with the same rules and messages, and expose the same
fitted attributes; ``fit`` runs scikit-learn's checks, then the search on hpsearch's
scheduler (:class:`AdaptiveSearchCV`, the ``SearchCVMixin`` pattern of
:mod:`hpsearch.search_cv`), on ``workers`` (threads, processes or remote machines;
None means ``n_jobs`` local workers as joblib counts them, the caller's thread for one), with ``asynchronous=True`` for ASHA and ``prune=True``
for folds dropped early. With the defaults the candidates, ``cv_results_`` and best
candidate equal scikit-learn's.
"""

from __future__ import annotations

from numbers import Integral
from types import SimpleNamespace
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.model_selection import check_cv
from sklearn.model_selection._search import BaseSearchCV

# scikit-learn's classes without ``sklearn.experimental.enable_halving_search_cv``,
# whose import would change sklearn.model_selection for the whole process
from sklearn.model_selection._search_successive_halving import HalvingGridSearchCV as _SkHalvingGrid
from sklearn.model_selection._search_successive_halving import HalvingRandomSearchCV as _SkHalvingRandom
from sklearn.utils.validation import _num_samples, indexable

from .adaptive import AdaptiveOptions, check_prune, make_adaptive_strategy, search_attributes
from .api import run_search
from .search_cv import _STORAGE_CONSTRAINTS, SearchCVMixin
from .space import Space

__all__ = ["AdaptiveSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV", "HyperbandSearchCV"]

_FITTED = (
    "cv_results_", "best_index_", "best_params_", "best_score_", "best_estimator_", "refit_time_",
    "n_splits_", "multimetric_", "scorer_",
)
_HALVING_FITTED = (
    "n_resources_", "n_candidates_", "n_iterations_", "n_required_iterations_", "n_possible_iterations_",
    "min_resources_", "max_resources_", "n_remaining_candidates_", "history_", "model_history_",
)


class _HalvingFit:
    """``fit`` for the Halving classes: scikit-learn's checks, hpsearch's scheduler."""

    workers: Any
    asynchronous: bool
    incremental: bool
    prune: Any
    storage: Any
    name: str | None

    def _hpsearch_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run successive halving on ``X``, ``y``; ``params`` go to ``fit`` (``groups``
        to the CV splitter), as in scikit-learn.

        Returns
        -------
        self : object
        """
        self._validate_params()  # type: ignore[attr-defined]
        X, y = indexable(X, y)
        groups = params.pop("groups", None)
        self._checked_cv_orig = check_cv(self.cv, y, classifier=is_classifier(self.estimator))  # type: ignore[attr-defined]
        # scikit-learn's own checks, in its order and with its messages
        self._check_input_parameters(X=X, y=y, split_params={} if groups is None else {"groups": groups})  # type: ignore[attr-defined]
        self._n_samples_orig = _num_samples(X)
        kwargs = self._hpsearch_kwargs()
        search = AdaptiveSearchCV(
            self.estimator,  # type: ignore[attr-defined]
            kwargs["space"],
            kwargs["strategy"],
            n_iter=kwargs.get("n_iter", 10),
            factor=self.factor,  # type: ignore[attr-defined]
            resource=self.resource,  # type: ignore[attr-defined]
            min_resources=self.min_resources,  # type: ignore[attr-defined]
            max_resources=self.max_resources,  # type: ignore[attr-defined]
            aggressive_elimination=self.aggressive_elimination,  # type: ignore[attr-defined]
            asynchronous=self.asynchronous,
            incremental=self.incremental,
            prune=self.prune,
            random_state=self.random_state,  # type: ignore[attr-defined]
            scoring=self.scoring,  # type: ignore[attr-defined]
            n_jobs=self.n_jobs,  # type: ignore[attr-defined]
            refit=bool(self.refit),  # type: ignore[attr-defined]
            cv=self._checked_cv_orig,
            error_score=self.error_score,  # type: ignore[attr-defined]
            return_train_score=self.return_train_score,  # type: ignore[attr-defined]
            workers=self.workers,
            storage=self.storage,
            name=self.name,
        )
        if groups is not None:
            params["groups"] = groups
        search.fit(X, y, **params)
        _copy_fitted(self, search, _FITTED)
        _copy_fitted(self, SimpleNamespace(**search.adaptive_attributes_), _HALVING_FITTED)
        self._fit_failures = getattr(search, "_fit_failures", [])
        return self


def _copy_fitted(search: Any, result: Any, names: tuple[str, ...]) -> None:
    """Set the fitted attributes the result has (no ``best_estimator_`` without refit)."""
    for name in names:
        value = getattr(result, name, None)
        if value is not None:
            setattr(search, name, value)


class HalvingGridSearchCV(_HalvingFit, _SkHalvingGrid):
    """scikit-learn's ``HalvingGridSearchCV``, evaluated by hpsearch's workers.

    Parameters are scikit-learn's, plus:

    workers : int, WorkerPool, list of them, or None
        Where the fits run (as in :func:`hpsearch.run_search`); None uses ``n_jobs`` local workers.
    asynchronous : bool
        Promote candidates without waiting for the whole iteration (ASHA). The
        candidates then differ from scikit-learn's; a slot that would sit idle at the
        end gets the best configuration not yet promoted, one rung up
        (``cv_results_["idle_promotion"]`` marks those).
    incremental : bool
        With an iteration resource (``n_estimators``, ``max_iter``): promoted
        candidates continue training from their models (see :mod:`hpsearch.incremental`).
    prune : bool or PairedPruner
        Skip the remaining folds of candidates that cannot reach the best one.
    storage : str or path, default=None
        An SQLite file that records the search as it runs; fitting the same search
        again with it resumes: stored fits are not run again, the halving is brought
        back to the rung it had reached, and ``cv_results_`` equal an uninterrupted
        run's. With ``random_state=None`` the seed drawn the first time is stored and
        reused. See :class:`~hpsearch.GridSearchCV` and :mod:`hpsearch.storage`.
    name : str, default=None
        The search's name in ``storage`` (None: ``"default"``).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from hpsearch import HalvingGridSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> search = HalvingGridSearchCV(SVC(), {"C": [0.1, 1, 10], "gamma": [0.01, 0.1]},
    ...                              factor=2, random_state=0, workers=2).fit(X, y)
    >>> search.n_resources_, search.n_candidates_
    ([37, 74, 148], [6, 3, 2])
    """

    _parameter_constraints: dict = {
        **_SkHalvingGrid._parameter_constraints,
        "workers": "no_validation",
        "asynchronous": ["boolean"],
        "incremental": ["boolean"],
        "prune": "no_validation",
        **_STORAGE_CONSTRAINTS,
    }

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        factor: float = 3,
        resource: str = "n_samples",
        max_resources: Any = "auto",
        min_resources: Any = "exhaust",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: Any = np.nan,
        return_train_score: bool = True,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        workers: Any = None,
        asynchronous: bool = False,
        incremental: bool = False,
        prune: Any = False,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            estimator, param_grid, factor=factor, resource=resource, max_resources=max_resources,
            min_resources=min_resources, aggressive_elimination=aggressive_elimination, cv=cv,
            scoring=scoring, refit=refit, error_score=error_score, return_train_score=return_train_score,
            random_state=random_state, n_jobs=n_jobs, verbose=verbose,
        )
        self.workers = workers
        self.asynchronous = asynchronous
        self.incremental = incremental
        self.prune = prune
        self.storage = storage
        self.name = name

    def _hpsearch_kwargs(self) -> dict[str, Any]:
        return {"space": self.param_grid, "strategy": "halving"}


class HalvingRandomSearchCV(_HalvingFit, _SkHalvingRandom):
    """scikit-learn's ``HalvingRandomSearchCV``, evaluated by hpsearch's workers.

    Parameters are scikit-learn's, plus ``workers``, ``asynchronous``, ``incremental``,
    ``prune``, ``storage`` and ``name`` (see :class:`HalvingGridSearchCV`).

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from hpsearch import HalvingRandomSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> search = HalvingRandomSearchCV(SVC(), {"C": loguniform(1e-2, 1e2)}, n_candidates=8,
    ...                                random_state=0, workers=2).fit(X, y)
    >>> search.n_candidates_
    [8, 3]
    """

    _parameter_constraints: dict = {
        **_SkHalvingRandom._parameter_constraints,
        "workers": "no_validation",
        "asynchronous": ["boolean"],
        "incremental": ["boolean"],
        "prune": "no_validation",
        **_STORAGE_CONSTRAINTS,
    }

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_candidates: Any = "exhaust",
        factor: float = 3,
        resource: str = "n_samples",
        max_resources: Any = "auto",
        min_resources: Any = "smallest",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: Any = np.nan,
        return_train_score: bool = True,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        workers: Any = None,
        asynchronous: bool = False,
        incremental: bool = False,
        prune: Any = False,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            estimator, param_distributions, n_candidates=n_candidates, factor=factor, resource=resource,
            max_resources=max_resources, min_resources=min_resources,
            aggressive_elimination=aggressive_elimination, cv=cv, scoring=scoring, refit=refit,
            error_score=error_score, return_train_score=return_train_score, random_state=random_state,
            n_jobs=n_jobs, verbose=verbose,
        )
        self.workers = workers
        self.asynchronous = asynchronous
        self.incremental = incremental
        self.prune = prune
        self.storage = storage
        self.name = name

    def _hpsearch_kwargs(self) -> dict[str, Any]:
        return {"space": self.param_distributions, "strategy": "halving_random", "n_iter": self.n_candidates}


class HyperbandSearchCV(BaseSearchCV):
    """Hyperband over sampled candidates, with cross-validation, on hpsearch's workers.

    Brackets of successive halving (Li et al. 2018, as in dask-ml's
    ``HyperbandSearchCV``) run side by side: the most exploratory bracket starts many
    candidates with ``max_resources / factor**s`` of the resource, the last one runs a
    few candidates with all of it. ``cv_results_`` has one row per (candidate,
    rung) with ``bracket``, ``iter`` and ``n_resources`` columns; the best candidate is
    the best of those evaluated with ``max_resources``.

    Parameters
    ----------
    estimator : estimator object
    param_distributions : dict or list of dicts
        Lists, scipy.stats distributions or hpsearch dimensions.
    resource : str, default="n_samples"
        ``"n_samples"`` or an integer parameter of the estimator (``max_iter``, ``n_estimators``).
    max_resources : int or "auto", default="auto"
        The most resource a candidate gets ("auto": every sample).
    min_resources : int or "smallest", default="smallest"
        The least ("smallest": 2 samples per fold and class, or 1).
    factor : float, default=3
        Hyperband's ``eta``.
    asynchronous : bool, default=False
        Run each bracket as ASHA.
    incremental : bool, default=False
        A promoted candidate continues training from the model it had at the previous
        rung (``partial_fit`` calls, or ``warm_start``; see :mod:`hpsearch.incremental`),
        as dask-ml's ``HyperbandSearchCV`` does; the resource must then be an
        iteration parameter such as ``max_iter`` or ``n_estimators``.
    cv, scoring, refit, error_score, return_train_score, random_state
        As in scikit-learn's search estimators.
    n_jobs : int or None, default=None
        Local workers when ``workers`` is None, as joblib counts them and as
        ``workers=N`` runs them (threads or processes chosen per search): None runs
        the fits in the caller's thread, -1 one worker per core.
    workers : int, WorkerPool or list of them, default=None
        Where the fits run (as in :func:`hpsearch.run_search`); None uses ``n_jobs``.
    prune : bool or PairedPruner, default=False
    storage : str or path, default=None
        An SQLite file that records the search; fitting it again resumes it (see
        :class:`HalvingGridSearchCV`).
    name : str, default=None
        The search's name in ``storage`` (None: ``"default"``).

    Attributes
    ----------
    cv_results_, best_index_, best_params_, best_score_, best_estimator_, refit_time_
        As in scikit-learn.
    n_brackets_, n_candidates_, min_resources_, max_resources_
        The brackets run, the evaluations in each, and the resource bounds.
    history_ : list of dict
        One record per evaluation of a configuration at one rung, in the order the
        scores arrived: ``model_id`` (``"bracket=b-i"``), ``params`` (without the
        resource), ``bracket``, ``iter``, ``n_resources``, ``score`` (mean test score),
        ``mean_fit_time``, ``mean_score_time`` (dask-ml's ``history_``, with
        ``n_resources`` for its ``partial_fit_calls``).
    model_history_ : dict
        The records of ``history_`` by ``model_id``.

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from hpsearch import HyperbandSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> search = HyperbandSearchCV(LogisticRegression(max_iter=1000), {"C": loguniform(1e-3, 1e2)},
    ...                            min_resources=30, random_state=0, workers=2).fit(X, y)
    >>> search.n_brackets_, int(search.cv_results_["n_resources"][search.best_index_])
    (2, 150)
    """

    _parameter_constraints: dict = {
        **BaseSearchCV._parameter_constraints,
        "param_distributions": [dict, list],
        "resource": [str],
        "max_resources": "no_validation",
        "min_resources": "no_validation",
        "factor": "no_validation",
        "asynchronous": ["boolean"],
        "incremental": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "workers": "no_validation",
        "prune": "no_validation",
        **_STORAGE_CONSTRAINTS,
    }

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        resource: str = "n_samples",
        max_resources: Any = "auto",
        min_resources: Any = "smallest",
        factor: float = 3,
        asynchronous: bool = False,
        incremental: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        random_state: Any = None,
        n_jobs: int | None = None,
        workers: Any = None,
        prune: Any = False,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(estimator, scoring=scoring, refit=refit, cv=cv, error_score=error_score,
                         return_train_score=return_train_score)
        self.param_distributions = param_distributions
        self.resource = resource
        self.max_resources = max_resources
        self.min_resources = min_resources
        self.factor = factor
        self.asynchronous = asynchronous
        self.incremental = incremental
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.workers = workers
        self.prune = prune
        self.storage = storage
        self.name = name

    def fit(self, X: Any, y: Any = None, **params: Any) -> HyperbandSearchCV:
        """Run Hyperband; ``params`` go to ``fit`` (``groups`` to the CV splitter)."""
        self._validate_params()
        groups = params.pop("groups", None)
        workers = self.workers
        if workers is None:  # n_jobs local workers, as joblib counts them (None: the caller's thread)
            from joblib import effective_n_jobs

            n = effective_n_jobs(self.n_jobs)
            workers = None if n == 1 else n
        result = run_search(
            self.estimator, self.param_distributions, X, y, strategy="hyperband", cv=self.cv,
            scoring=self.scoring, refit=self.refit, groups=groups, fit_params=params, workers=workers,
            error_score=self.error_score, return_train_score=self.return_train_score,
            random_state=self.random_state, progress=False, factor=self.factor, resource=self.resource,
            min_resources=self.min_resources, max_resources=self.max_resources,
            asynchronous=self.asynchronous, incremental=self.incremental, prune=self.prune,
            storage=self.storage, name=self.name,
        )
        _copy_fitted(self, result, _FITTED + ("n_brackets_", "n_candidates_", "min_resources_", "max_resources_",
                                              "history_", "model_history_"))
        return self

    def _run_search(self, evaluate_candidates: Any, **kwargs: Any) -> None:  # pragma: no cover - fit is overridden
        raise NotImplementedError("HyperbandSearchCV.fit runs the search on hpsearch's scheduler")


class AdaptiveSearchCV(SearchCVMixin, BaseSearchCV):
    """The search behind ``run_search(strategy="halving" | "halving_random" | "hyperband")``.

    scikit-learn's ``BaseSearchCV.fit`` (through :class:`~hpsearch.search_cv.SearchCVMixin`)
    with an adaptive strategy (:mod:`hpsearch.strategies.halving`) run by
    ``evaluate_candidates.run_strategy``, as :class:`~hpsearch.BayesSearchCV` runs its
    optimizer. The strategy is made once the data is known (its resources depend on
    the number of samples); the best candidate is the strategy's (scikit-learn's rule
    for synchronous halving), and its fitted attributes (``n_resources_``,
    ``n_candidates_``, ...) are in ``adaptive_attributes_``. ``storage`` and ``name``
    record and resume the search as in :class:`HalvingGridSearchCV`.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from hpsearch.adaptive_cv import AdaptiveSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> s = AdaptiveSearchCV(SVC(), {"C": [0.1, 1, 10]}, "halving", random_state=0, cv=3).fit(X, y)
    >>> s.adaptive_attributes_["n_candidates_"]
    [3, 1]
    """

    _parameter_constraints: dict = {
        **BaseSearchCV._parameter_constraints,
        **dict.fromkeys(
            ("space", "kind", "n_iter", "factor", "resource", "min_resources", "max_resources",
             "aggressive_elimination", "asynchronous", "incremental", "prune", "random_state", "workers"),
            "no_validation",
        ),
        **_STORAGE_CONSTRAINTS,
    }

    def __init__(
        self,
        estimator: Any,
        space: Any,
        kind: str,
        *,
        n_iter: Any = 10,
        factor: float = 3,
        resource: str = "n_samples",
        min_resources: Any = "exhaust",
        max_resources: Any = "auto",
        aggressive_elimination: bool = False,
        asynchronous: bool = False,
        incremental: bool = False,
        prune: Any = False,
        random_state: Any = None,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        workers: Any = None,
        storage: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            estimator=estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            error_score=error_score, return_train_score=return_train_score,
        )
        self.space = space
        self.kind = kind
        self.n_iter = n_iter
        self.factor = factor
        self.resource = resource
        self.min_resources = min_resources
        self.max_resources = max_resources
        self.aggressive_elimination = aggressive_elimination
        self.asynchronous = asynchronous
        self.incremental = incremental
        self.prune = prune
        self.random_state = random_state
        self.workers = workers
        self.storage = storage
        self.name = name

    def _check_options(self) -> tuple[Space, AdaptiveOptions]:
        """The space and options, checked before any work (errors name the fix)."""
        space = self.space if isinstance(self.space, Space) else Space.from_spec(self.space)
        options = AdaptiveOptions.checked(
            self.estimator, space, self.kind, factor=self.factor, resource=self.resource,
            min_resources=self.min_resources, max_resources=self.max_resources,
            aggressive_elimination=self.aggressive_elimination, asynchronous=self.asynchronous,
            incremental=self.incremental,
        )
        return space, options

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run the adaptive search (see :class:`~hpsearch.search_cv.SearchCVMixin`)."""
        self._check_options()
        check_prune(self.prune)  # before any work (SearchCVMixin.fit uses it)
        self._strategy: Any = None
        super().fit(X, y, **params)
        metric = self.refit if isinstance(self.refit, str) else "score"
        self.adaptive_attributes_ = search_attributes(self._strategy, self.cv_results_, metric)
        return self

    def _journal_definition(self) -> tuple[Any, Any, bool]:
        space, _ = self._check_options()
        settings = ", ".join(
            f"{key}={getattr(self, key)!r}"
            for key in ("n_iter", "factor", "resource", "min_resources", "max_resources",
                        "aggressive_elimination", "asynchronous", "incremental")
        )
        # every adaptive search draws random numbers: candidates (halving_random,
        # hyperband) or subsamples of the folds (resource="n_samples")
        return space, f"{self.kind}({settings})", True

    def _run_search(self, evaluate_candidates: Any, *, callback_ctx: Any = None) -> None:
        space, options = self._check_options()
        setup = evaluate_candidates.setup
        random_state = self._fit_random_state()
        strategy = make_adaptive_strategy(
            self.kind, space, self.estimator, options, n_iter=self.n_iter, n_samples=_num_samples(setup.X),
            n_splits=self.n_splits_, y=setup.y, cv=self._checked_cv_orig, random_state=random_state,
        )
        self._strategy = strategy
        incremental = None
        if options.incremental:
            from .incremental import incremental_config

            incremental = incremental_config(self.estimator, options.resource,
                                             final_resource=strategy.final_resource, y=setup.y)
        evaluate_candidates.run_strategy(
            strategy, callback_ctx=callback_ctx, subsample=(strategy.n_samples_levels, random_state),
            incremental=incremental,
        )

    def _select_best_index(self, refit: Any, refit_metric: str, results: dict[str, Any]) -> int:
        strategy = getattr(self, "_strategy", None)
        if strategy is not None and not callable(refit) and len(results.get("params", ())):
            return int(strategy.best_index(results, refit_metric))
        return int(BaseSearchCV._select_best_index(refit, refit_metric, results))
