"""The one search engine behind the search estimators and :func:`hpsearch.run_search`.

scikit-learn's ``BaseSearchCV.fit`` runs every (candidate, split) through
``_fit_and_score`` with joblib. hpsearch keeps scikit-learn's ``fit`` step for step
(:class:`hpsearch.search_cv.SearchCVMixin`) and replaces only that evaluation:

* :class:`TaskContext` is an :class:`~hpsearch.evaluation.EvaluationContext` that
  holds what scikit-learn passes to every ``_fit_and_score`` call (the scorer object,
  the routed fit and score params, ``verbose``, the callback contexts, the search
  itself as ``caller``). It is shipped to each worker once; a task then carries only
  ``(params, fold)``, and the worker runs scikit-learn's own ``_fit_and_score`` on it,
  so scores, warnings, verbose lines and callback hooks are scikit-learn's.
* :class:`CandidateEvaluator` is the ``evaluate_candidates`` callable handed to
  ``_run_search``: called with a list of candidates it runs them as one
  :class:`~hpsearch.strategies.base.ListStrategy` on hpsearch's scheduler; its
  :meth:`~CandidateEvaluator.run_strategy` runs an adaptive strategy (ask/tell) the
  same way. Both append to the results that ``cv_results_`` is built from.
"""

from __future__ import annotations

import functools
import logging
import numbers
import os
import queue
import threading
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import numpy as np
from sklearn import config_context, get_config, set_config
from sklearn.base import clone
from sklearn.metrics._scorer import _MultimetricScorer
from sklearn.model_selection._validation import (
    _fit_and_score,
    _insert_error_scores,
    _score,
    _warn_or_raise_about_fit_failures,
)
from sklearn.utils.validation import _check_method_params, _num_samples

from .errors import FitFailedError, InvalidParameterError
from .evaluation import PLAIN_ARRAYS, EvaluationContext, FoldResult, evaluate_plain, rows_by_index, split_rows
from .scheduler import SearchProgress, run_scheduler
from .strategies.base import Candidate, ListStrategy, Strategy
from .workers.base import Emit, PoolFailed, Task, TaskFinished, WorkerJoined, WorkerPool
from .workers.threads import ThreadWorkers, available_cores

logger = logging.getLogger(__name__)

__all__ = ["CANDIDATE_KEY", "CandidateEvaluator", "TaskContext", "make_pools"]

#: Reserved key carrying a candidate's index inside the params a task ships; no
#: estimator parameter can be named so (scikit-learn's names never hold a colon).
CANDIDATE_KEY = "hpsearch:candidate"

WorkersSpec = Union[int, WorkerPool, Sequence[Union[int, WorkerPool]], None]


# -- worker side --------------------------------------------------------------------------


@dataclass
class TaskContext(EvaluationContext):
    """What every ``_fit_and_score`` call of one ``evaluate_candidates`` call shares.

    ``scorers`` (inherited) maps the score names the results will carry to scorers:
    ``{"score": scorer}`` for one metric, the metrics of a multi-metric scoring, and
    ``{}`` for a callable ``scoring`` whose names (it may return a dict) are only
    known once it has run.
    """

    scorer: Any = None
    verbose: int = 0
    caller: Any = None
    callback_contexts: list[Any] | None = None
    n_candidates: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    warning_filters: list[Any] = field(default_factory=list)
    master_pid: int = 0
    #: incremental training (:mod:`hpsearch.incremental`), None to train every task from scratch
    incremental: Any = None

    def evaluate_task(self, params: Mapping[str, Any], fold: int) -> FoldResult:
        """Run scikit-learn's ``_fit_and_score`` on one (candidate, fold)."""
        params = dict(params)
        candidate = int(params.pop(CANDIDATE_KEY, 0))
        split = fold
        train, test = self.splits[fold]
        n_splits = self.n_splits  # subsampled copies of the folds (adaptive search) follow them
        fold %= n_splits
        task = candidate * n_splits + fold
        callback_ctx = None
        if self.callback_contexts is not None and task < len(self.callback_contexts):
            callback_ctx = self.callback_contexts[task]
        if self.prefix_cache is not None and self.incremental is None and self._reuses_prefix(params, callback_ctx):
            with self._environment():
                return evaluate_plain(self, params, fold)
        plain = callback_ctx is None and self.verbose <= 1 and _plain_data(self.X, self.y)
        try:
            if self.incremental is not None:  # continues a stored model (no verbose lines, no callbacks)
                from .incremental import evaluate_incremental

                with self._environment():
                    return evaluate_incremental(self, params, split)
            with self._environment():
                if plain and _FIT_LINES is not None and not get_config().get("array_api_dispatch"):
                    out = _fit_and_score_plain(
                        clone(self.estimator), self.X, self.y, train=train, test=test,
                        parameters=params, scorer=self.scorer, fit_params=self.fit_params,
                        score_params=self.score_params, return_train_score=self.return_train_score,
                        error_score=self.error_score,
                    )
                else:
                    out = _fit_and_score(
                        clone(self.estimator),
                        self.X,
                        self.y,
                        train=train,
                        test=test,
                        parameters=params,
                        split_progress=(fold, n_splits),
                        candidate_progress=(candidate, self.n_candidates),
                        scorer=self.scorer,
                        fit_params=self.fit_params,
                        score_params=self.score_params,
                        return_train_score=self.return_train_score,
                        return_n_test_samples=True,
                        return_times=True,
                        return_parameters=False,
                        error_score=self.error_score,
                        verbose=self.verbose,
                        caller=self.caller,
                        callback_ctx=callback_ctx,
                    )
        except Exception as exc:  # only with error_score="raise": the scheduler raises it
            nan = dict.fromkeys(self.scorers, np.nan)
            return FoldResult(
                test_scores=nan,
                train_scores=dict(nan) if self.return_train_score else None,
                fit_time=0.0,
                score_time=0.0,
                n_test_samples=len(test),
                error=traceback.format_exc(),
                exception=exc,
            )
        return FoldResult(
            test_scores=_scores_to_wire(out["test_scores"], out["fit_error"], self.scorers),
            train_scores=(
                _scores_to_wire(out["train_scores"], out["fit_error"], self.scorers)
                if self.return_train_score
                else None
            ),
            fit_time=float(out["fit_time"]),
            score_time=float(out["score_time"]),
            n_test_samples=int(out["n_test_samples"]),
            error=out["fit_error"],
        )

    def _reuses_prefix(self, params: Mapping[str, Any], callback_ctx: Any) -> bool:
        """Whether hpsearch's own evaluation, which shares pipeline prefixes between
        candidates, gives this task ``_fit_and_score``'s result: named scorers, no
        callbacks, no verbose output (:func:`hpsearch.prefix.plan_reuse`
        refuses what else it does not model)."""
        if not self.scorers or callback_ctx is not None or self.verbose:
            return False
        from .prefix import is_pipeline, plan_reuse

        if not is_pipeline(self.estimator):  # set_params keeps the type: plan_reuse says no
            return False

        try:
            estimator = clone(self.estimator).set_params(**clone(dict(params), safe=False))
        except Exception:  # a bad value: _fit_and_score reports it as scikit-learn does
            return False
        return plan_reuse(self, estimator) is not None

    def _environment(self) -> _TaskEnvironment:
        """scikit-learn's configuration of the searching thread (thread-local) and, in
        another process, its warning filters — what ``sklearn.utils.parallel`` does
        (see :class:`_TaskEnvironment`)."""
        return _TaskEnvironment(self)

    def _task_filters(self) -> list[Any]:
        """The caller's warning filters as this process's ``warnings.filters`` list:
        built once per process, the same list every task."""
        filters = self.__dict__.get("_filters_here")
        if filters is None:
            with warnings.catch_warnings():
                warnings.resetwarnings()
                for action, message, category, module, lineno in self.warning_filters:
                    warnings.filterwarnings(
                        action, message=getattr(message, "pattern", message or ""),
                        category=category, module=getattr(module, "pattern", module or ""),
                        lineno=lineno, append=True,
                    )
                filters = self.__dict__["_filters_here"] = list(warnings.filters)
        return filters


class _TaskEnvironment:
    """What a task runs in: ``config_context(**context.config)`` and, in another
    process than the master, ``warnings.catch_warnings()`` with the caller's filters.

    One object with ``__enter__``/``__exit__`` rather than two generator-based context
    managers (a tenth of a no-op task's cost in a worker process), and without
    ``config_context``'s two ``set_config`` calls when the thread already runs with the
    search's configuration, as a slot thread does from its second task of a search on:
    the configuration is then only put back if the task changed it, as
    ``config_context`` would have.
    """

    __slots__ = ("_context", "_before", "_config", "_warnings")

    def __init__(self, context: TaskContext) -> None:
        self._context = context

    def __enter__(self) -> None:
        context = self._context
        before = get_config()
        if before != context.config:
            self._config: Any = config_context(**context.config)
            self._config.__enter__()
        else:
            self._config = None
            self._before = before
        self._warnings: Any = None
        if os.getpid() == context.master_pid:  # warning filters are shared by threads
            return
        try:
            filters = context._task_filters()
            self._warnings = warnings.catch_warnings()
            self._warnings.__enter__()
            warnings.filters[:] = filters  # type: ignore[index]  # a list at run time
            _filters_mutated()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._warnings is not None:
                self._warnings.__exit__(*exc_info)
        finally:
            if self._config is not None:
                self._config.__exit__(*exc_info)
            elif get_config() != self._before:
                set_config(**self._before)


def _filters_mutated() -> None:
    """Tell the warnings machinery its filter list changed (its per-module caches)."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()


def _plain_data(X: Any, y: Any) -> bool:
    """Whether ``X`` and ``y`` are plain numpy arrays or memmaps (no dataframe, sparse
    matrix or array-API namespace), which :func:`_fit_and_score_plain` indexes directly."""
    return type(X) in PLAIN_ARRAYS and (y is None or type(y) in PLAIN_ARRAYS)


def _fit_lines() -> dict[str, Any] | None:
    """The line numbers of scikit-learn's ``estimator.fit`` calls in ``_fit_and_score``,
    found by the source text of the call, and its file; None if not found."""
    import inspect

    try:
        lines, first = inspect.getsourcelines(_fit_and_score)
        path = inspect.getsourcefile(_fit_and_score)
    except (OSError, TypeError):
        return None
    found: dict[str, Any] = {}
    for offset, line in enumerate(lines):
        # The first occurrence: scikit-learn's own searches always pass a callback
        # context, so their tracebacks name the call in that branch.
        if line.strip() in _FIT_CALLS.values():
            found.setdefault(line.strip(), first + offset)
    if path is None or set(found) != set(_FIT_CALLS.values()):
        return None
    return {"path": path, **found}


_FIT_CALLS = {"unsupervised": "estimator.fit(X_train, **fit_params)",
              "supervised": "estimator.fit(X_train, y_train, **fit_params)"}
_FIT_LINES = _fit_lines()


def _own_indices(indices: Any) -> np.ndarray:
    """A split's indices as an array that holds only them.

    ``ShuffleSplit`` yields slices of one permutation of every row per split: kept as
    they are, each split would keep its whole permutation alive (``train_size=0.05``:
    ten times the indices' own size) for the whole search.

    Examples
    --------
    >>> permutation = np.arange(1000)
    >>> _own_indices(permutation[:10]).base is None, _own_indices(permutation) is permutation
    (True, True)
    """
    array = np.asarray(indices)
    base = array.base
    if isinstance(base, np.ndarray) and base.nbytes > 2 * array.nbytes:
        return array.copy()
    return array


def _fit_and_score_plain(
    estimator: Any, X: Any, y: Any, *, scorer: Any, train: np.ndarray, test: np.ndarray,
    parameters: dict[str, Any], fit_params: Any, score_params: Any, return_train_score: bool,
    error_score: Any,
) -> dict[str, Any]:
    """scikit-learn's ``_fit_and_score`` for numpy data, without callbacks nor verbose
    output, and without its per-call costs that do not apply then (array-namespace
    lookups, the dataframe detection of ``_safe_split``, which cost more than a small
    fit): the same steps in the same order, scikit-learn's own ``_score``, and a fit
    error's traceback text as ``_fit_and_score`` formats it (its frame named in place of
    this one), so results, warnings and ``cv_results_`` are the same. One step moves:
    the test fold is taken after the fit (and, without ``return_train_score``, once the
    training fold is let go), so a task never holds both folds and the fit's own arrays
    at once; ``fit_time`` then leaves out the test fold's indexing, ``score_time``
    counts it.

    Its output is ``_fit_and_score``'s with ``return_n_test_samples`` and ``return_times``.
    """
    if not isinstance(error_score, numbers.Number) and error_score != "raise":
        raise ValueError(
            "error_score must be the string 'raise' or a numeric value. "
            "(Hint: if using 'raise', please make sure that it has been "
            "spelled correctly.)"
        )
    fit_params = fit_params if fit_params is not None else {}
    fit_params = _check_method_params(X, params=fit_params, indices=train) if fit_params else {}
    score_params = score_params if score_params is not None else {}
    score_params_train = _check_method_params(X, params=score_params, indices=train) if score_params else {}
    score_params_test = _check_method_params(X, params=score_params, indices=test) if score_params else {}
    if parameters is not None:
        estimator = estimator.set_params(**clone(parameters, safe=False))
    start_time = time.time()
    plain = rows_by_index(estimator, X, y)  # split_rows' fast path, the tags read once for both folds
    if plain:
        X_train, y_train = X[train], None if y is None else y[train]
    else:
        X_train, y_train = split_rows(estimator, X, y, train)
    result: dict[str, Any] = {}
    # The rows X_test will have (pairwise too: X[test][:, train]), for a failed fit.
    n_test = int(np.count_nonzero(test)) if np.asarray(test).dtype == bool else len(test)
    try:
        if y_train is None:
            estimator.fit(X_train, **fit_params)
        else:
            estimator.fit(X_train, y_train, **fit_params)
    except Exception as exc:
        fit_time = time.time() - start_time
        score_time = 0.0
        if error_score == "raise":
            raise
        if isinstance(scorer, _MultimetricScorer):
            test_scores: Any = {name: error_score for name in scorer._scorers}
            if return_train_score:
                train_scores: Any = test_scores.copy()
        else:
            test_scores = error_score
            if return_train_score:
                train_scores = error_score
        result["fit_error"] = _sklearn_fit_traceback(exc, y_train is None)
    else:
        result["fit_error"] = None
        fit_time = time.time() - start_time
        if not return_train_score:
            # Folds are copies of their rows. The test fold is taken after the fit, and
            # the training fold let go first when no train score needs it: a task then
            # holds the training fold and what the fit allocates, or the test fold, not
            # all three at once (``benchmarks/bench_memory.py``).
            X_train = y_train = None
        if plain:
            X_test, y_test = X[test], None if y is None else y[test]
        else:
            X_test, y_test = split_rows(estimator, X, y, test, train)
        n_test = X_test.shape[0] if plain else _num_samples(X_test)  # what _num_samples says of an array
        test_scores = _score(estimator, X_test, y_test, scorer, score_params_test, error_score)
        score_time = time.time() - start_time - fit_time
        if return_train_score:
            train_scores = _score(estimator, X_train, y_train, scorer, score_params_train, error_score)
    result["test_scores"] = test_scores
    if return_train_score:
        result["train_scores"] = train_scores
    result["n_test_samples"] = n_test
    result["fit_time"] = fit_time
    result["score_time"] = score_time
    return result


def _sklearn_fit_traceback(exc: BaseException, unsupervised: bool) -> str:
    """``format_exc()`` of a fit error as ``_fit_and_score`` would print it: its first
    frame (the caller of ``fit``) is scikit-learn's, not :func:`_fit_and_score_plain`."""
    assert _FIT_LINES is not None
    tb = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    if tb.stack:
        call = _FIT_CALLS["unsupervised" if unsupervised else "supervised"]
        tb.stack[0] = traceback.FrameSummary(
            str(_FIT_LINES["path"]), int(_FIT_LINES[call]), "_fit_and_score", line=call
        )
    return "".join(tb.format())


def _scores_to_wire(scores: Any, fit_error: str | None, names: Mapping[str, Any]) -> dict[str, float]:
    """``_fit_and_score``'s scores (a number or a dict) as a dict of plain floats."""
    if isinstance(scores, Mapping):
        return {str(k): float(v) for k, v in scores.items()}
    if not names and fit_error is not None:
        return {}  # a callable scorer's names are unknown here: the master fills them in
    return {"score": float(scores)}


# -- master side --------------------------------------------------------------------------


class CallerThreadWorker:
    """The searching thread itself as the one worker: scikit-learn's sequential mode.

    With ``n_jobs`` None (or 1) and no ``workers``, scikit-learn fits in the calling
    thread; so does hpsearch, so that thread-local state, the call stack seen by the
    estimators, and Ctrl-C behave as in scikit-learn. The scheduler then runs on a
    helper thread (:func:`run_in_caller_thread`) and this worker's tasks are run by
    :meth:`serve` on the caller's thread.
    """

    name = "caller"
    slots = 1
    prefetch = 0

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._context: EvaluationContext | None = None
        self._emit: Emit | None = None

    # -- WorkerPool ---------------------------------------------------------------------

    def start(self, context: EvaluationContext, emit: Emit) -> None:
        self._context, self._emit = context, emit
        emit(WorkerJoined(self))

    def stop(self) -> None:
        self._tasks.put(None)

    # -- Worker -------------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        self._tasks.put(task)

    def close(self) -> None:
        self._tasks.put(None)

    def reset(self) -> None:
        """A fresh task queue, before each scheduler run (a run ends with a stop)."""
        self._tasks = queue.SimpleQueue()

    def serve(self) -> None:
        """Run the tasks submitted, until the scheduler stops the pool."""
        from .evaluation import evaluate

        while (task := self._tasks.get()) is not None:
            assert self._context is not None and self._emit is not None
            result = evaluate(self._context, task.params, task.fold)
            self._emit(TaskFinished(self.name, task.task_id, task.attempt, result))

    def abort(self, error: BaseException) -> None:
        """End the search with ``error`` (Ctrl-C while a fit ran here)."""
        if self._emit is not None:
            self._emit(PoolFailed(error))


def run_in_caller_thread(worker: CallerThreadWorker, run: Callable[[], Any]) -> Any:
    """``run()`` (the scheduler) on a helper thread while this thread serves ``worker``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = run()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            worker.stop()

    worker.reset()
    thread = threading.Thread(target=target, name="hpsearch-scheduler", daemon=True)
    thread.start()
    try:
        worker.serve()
    except BaseException as exc:  # Ctrl-C during a fit: the search ends with it
        worker.abort(exc)
        thread.join()
        raise outcome.get("error", exc) from None
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def make_pools(workers: WorkersSpec, n_jobs: Any = None) -> tuple[list[WorkerPool], list[WorkerPool]]:
    """The pools to use, and those made here (which the caller must stop).

    An int N is N local workers, threads or processes chosen per search
    (:class:`~hpsearch.workers.auto.AutoWorkers`; one is a thread). ``workers=None``
    means ``n_jobs`` local workers (joblib's meaning: None is one, -1 every core): the
    caller's own thread for one, else ``AutoWorkers`` as for an int, or threads when
    joblib's active backend is ``"threading"`` (``joblib.parallel_config``), as
    scikit-learn's ``n_jobs`` would then use.
    """
    if workers is None:
        from joblib import effective_n_jobs
        from joblib.parallel import ThreadingBackend, get_active_backend

        n = effective_n_jobs(n_jobs)
        if n == 1:
            caller = CallerThreadWorker()
            return [caller], []
        n = max(1, min(int(n), 4 * available_cores()))
        if isinstance(get_active_backend()[0], ThreadingBackend):
            threads = ThreadWorkers(n)
            return [threads], [threads]
        pool = local_workers(n)
        return [pool], [pool]
    items = list(workers) if isinstance(workers, (list, tuple)) else [workers]
    if not items:
        raise InvalidParameterError("workers is an empty list; give a number of workers or a worker pool")
    pools: list[WorkerPool] = []
    owned: list[WorkerPool] = []
    for item in items:
        if isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if item < 1:
                raise InvalidParameterError(f"workers must be >= 1, got {item}")
            made = local_workers(int(item))
            pools.append(made)
            owned.append(made)
        elif isinstance(item, WorkerPool):
            pools.append(item)
        else:
            raise InvalidParameterError(
                f"workers must be a number of local workers (int >= 1), a worker pool such as "
                f"ThreadWorkers, LocalProcesses or RemoteWorkers, or a list of them; got {item!r}"
            )
    return pools, owned


def local_workers(n: int) -> WorkerPool:
    """``workers=n``: one thread for one, else threads or processes chosen per search."""
    if n == 1:
        return ThreadWorkers(1)
    from .workers.auto import AutoWorkers

    return AutoWorkers(n)


def check_workers(workers: WorkersSpec) -> None:
    """Refuse a bad ``workers`` before any work (nothing is started)."""
    if workers is None:
        return
    items = list(workers) if isinstance(workers, (list, tuple)) else [workers]
    if not items:
        raise InvalidParameterError("workers is an empty list; give a number of workers or a worker pool")
    for item in items:
        if isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if item < 1:
                raise InvalidParameterError(f"workers must be >= 1, got {item}")
        elif not isinstance(item, WorkerPool):
            raise InvalidParameterError(
                f"workers must be a number of local workers (int >= 1), a worker pool such as "
                f"ThreadWorkers, LocalProcesses or RemoteWorkers, or a list of them; got {item!r}"
            )


class _Tagged:
    """A strategy whose candidates carry their index (:data:`CANDIDATE_KEY`), so a
    worker can name the candidate in verbose lines and pick its callback context."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        # Asked and told on the scheduler's thread when the strategy is (tagging is cheap).
        self.inline = getattr(strategy, "inline", False) is True
        ask_idle = getattr(strategy, "ask_idle", None)
        if callable(ask_idle):  # only then does the scheduler ask for idle slots' work
            self.ask_idle = lambda n: [replace(c, params={**c.params, CANDIDATE_KEY: c.id}) for c in ask_idle(n)]

    def ask(self, n: int) -> list[Candidate]:
        return [replace(c, params={**c.params, CANDIDATE_KEY: c.id}) for c in self.strategy.ask(n)]

    def tell(self, candidate_id: int, score: float) -> None:
        self.strategy.tell(candidate_id, score)

    @property
    def finished(self) -> bool:
        return bool(self.strategy.finished)

    @property
    def total(self) -> int | None:
        return self.strategy.total


@dataclass
class EvaluationSetup:
    """What ``fit`` fixes before the search starts (one per ``fit``)."""

    search: Any
    base_estimator: Any
    X: Any
    y: Any
    scorers: Any
    score_names: dict[str, Any]
    routed_params: Any
    pools: list[WorkerPool]
    on_candidate: Callable[[SearchProgress], None] | None = None
    #: pipeline prefix reuse (:mod:`hpsearch.prefix`), None for none
    prefix_cache: Any = None
    #: ``open_journal(context)``: the storage journal of this search (:mod:`hpsearch.storage`)
    open_journal: Callable[[EvaluationContext], Any] | None = None
    #: seconds a fit may run (None: no limit), and deaths a task may survive
    fit_timeout: float | None = None
    max_task_deaths: int = 3
    #: folds dropped early (:mod:`hpsearch.scheduler.pruning`), None for none
    pruner: Any = None


class CandidateEvaluator:
    """The ``evaluate_candidates`` callable of one ``fit``: scikit-learn's contract,
    hpsearch's scheduler.

    Calling it with candidates (and optionally another ``cv`` and ``more_results``,
    as successive halving does) evaluates them on every split and returns the
    ``cv_results_`` of everything evaluated so far. :meth:`run_strategy` does the
    same for a strategy that proposes candidates as scores arrive.
    """

    def __init__(self, setup: EvaluationSetup) -> None:
        self.setup = setup
        self.candidate_params: list[dict[str, Any]] = []
        self.out: list[dict[str, Any]] = []
        self.more_results: defaultdict[str, list[Any]] = defaultdict(list)
        self.results: dict[str, Any] = {}
        self.fit_failures: list[str] = []
        self._subsample: Any = None
        self._incremental: Any = None

    def __call__(
        self,
        candidate_params: Iterable[Mapping[str, Any]],
        cv: Any = None,
        more_results: Mapping[str, Sequence[Any]] | None = None,
        callback_ctx: Any = None,
    ) -> dict[str, Any]:
        params = [dict(p) for p in candidate_params]
        return self._run(ListStrategy(params), len(params), cv, more_results, callback_ctx)

    def run_strategy(
        self, strategy: Strategy, cv: Any = None, callback_ctx: Any = None, *, subsample: Any = None,
        incremental: Any = None,
    ) -> dict[str, Any]:
        """Run an ask/tell strategy to its end; ``cv_results_`` of all so far.

        ``subsample`` is ``(n_samples_levels, random_state)`` for an adaptive strategy
        on the number of samples: every fold is subsampled once per training-set size
        (:func:`hpsearch.adaptive.subsampled_splits`) before the search starts.
        ``incremental`` (an :class:`~hpsearch.incremental.IncrementalConfig`) makes
        promoted candidates continue from their models.
        """
        self._subsample = subsample
        self._incremental = incremental
        try:
            return self._run(strategy, strategy.total, cv, None, callback_ctx)
        finally:
            self._subsample = None
            self._incremental = None

    # -- the evaluation -------------------------------------------------------------

    def _run(
        self,
        strategy: Strategy,
        n_candidates: int | None,
        cv: Any,
        more_results: Mapping[str, Sequence[Any]] | None,
        callback_ctx: Any,
    ) -> dict[str, Any]:
        setup, search = self.setup, self.setup.search
        cv = cv or search._checked_cv_orig
        n_splits = search.n_splits_
        splits = [
            (_own_indices(train), _own_indices(test))
            for train, test in cv.split(setup.X, setup.y, **setup.routed_params.splitter.split)
        ]
        if len(splits) != n_splits:
            raise ValueError(
                f"cv.split and cv.get_n_splits return inconsistent results. "
                f"Expected {n_splits} splits, got {len(splits)}"
            )
        if search.verbose > 0 and n_candidates is not None:
            print(  # scikit-learn's verbose output is printed, not logged
                f"Fitting {n_splits} folds for each of {n_candidates} candidates,"
                f" totalling {n_candidates * n_splits} fits"
            )
        # Callback contexts (and the search, their hooks' `estimator`) travel only when
        # callbacks are set: without them a context holds the same bytes from one
        # search to the next, and a worker that holds it is not sent it again.
        has_callbacks = bool(getattr(search, "_skl_callbacks", None))
        contexts = None
        if has_callbacks and callback_ctx is not None and n_candidates is not None:
            # Made here, before any task runs, as scikit-learn does: a context changes
            # when a child is added, so it cannot be made while being pickled.
            contexts = [
                callback_ctx.subcontext(task_name="candidate-split-evaluation", task_id=task_id)
                for task_id in range(n_candidates * n_splits)
            ]
        offsets: dict[int, int] = {}
        if self._subsample is not None:
            from .adaptive import subsampled_splits
            from sklearn.utils.validation import _num_samples

            levels, random_state = self._subsample
            splits, offsets = subsampled_splits(splits, levels, _num_samples(setup.X), random_state)
        context = TaskContext(
            estimator=setup.base_estimator,
            X=setup.X,
            y=setup.y,
            splits=splits,
            subsample_offsets=offsets,
            scorers=setup.score_names,
            fit_params=setup.routed_params.estimator.fit,
            score_params=setup.routed_params.scorer.score,
            error_score=search.error_score,
            return_train_score=search.return_train_score,
            scorer=setup.scorers,
            verbose=search.verbose,
            caller=search if has_callbacks else None,
            callback_contexts=contexts,
            n_candidates=n_candidates or 0,
            config=get_config(),
            warning_filters=list(warnings.filters),
            master_pid=os.getpid(),
            prefix_cache=setup.prefix_cache,
            incremental=self._incremental,
        )
        score_key = _score_key(search.refit, setup.score_names)
        if not splits or n_candidates == 0:
            finished: list[tuple[Candidate, list[FoldResult]]] = []
        else:
            journal = setup.open_journal(context) if setup.open_journal is not None else None

            def run() -> list[tuple[Candidate, list[FoldResult]]]:
                # Candidates carry their index only where a worker needs it (verbose
                # lines, callback contexts): elsewhere params stay the user's, for the
                # journal and prefix affinity.
                tagged = _Tagged(strategy) if has_callbacks or search.verbose else strategy
                return run_scheduler(
                    tagged, setup.pools, context,
                    score_key=score_key, on_candidate=setup.on_candidate, journal=journal,
                    fit_timeout=setup.fit_timeout, max_task_deaths=setup.max_task_deaths,
                    pruner=setup.pruner,
                )

            try:
                if len(setup.pools) == 1 and isinstance(setup.pools[0], CallerThreadWorker):
                    finished = run_in_caller_thread(setup.pools[0], run)
                else:
                    finished = run()
            except BaseException as exc:
                self._keep_partial_result(exc)
                raise
        params = [_untagged(c.params) for c, _ in finished]
        out = [self._as_sklearn_out(r) for _, folds in finished for r in folds]
        if len(out) < 1:
            raise ValueError(
                "No fits were performed. Was the CV iterator empty? Were there no candidates?"
            )
        try:
            _warn_or_raise_about_fit_failures(out, search.error_score)
        except ValueError as exc:
            raise FitFailedError(str(exc)) from None
        if callable(search.scoring):
            _insert_error_scores(out, search.error_score)
        self.fit_failures += [o["fit_error"] for o in out if o["fit_error"] is not None]
        self.candidate_params.extend(params)
        self.out.extend(out)
        for key, value in (more_results or {}).items():
            self.more_results[key].extend(value)
        from .adaptive import tag_columns

        # the candidates' tags (adaptive search: iter, n_resources, bracket; pruned)
        for key, column in tag_columns([c for c, _ in finished], setup.pruner is not None).items():
            self.more_results[key].extend(column)
        self.results = search._format_results(self.candidate_params, n_splits, self.out, self.more_results)
        return self.results

    def _as_sklearn_out(self, result: FoldResult) -> dict[str, Any]:
        """A fold result in ``_fit_and_score``'s output format."""
        out = {
            "test_scores": self._sklearn_scores(result.test_scores, result.error),
            "n_test_samples": result.n_test_samples,
            "fit_time": result.fit_time,
            "score_time": result.score_time,
            "fit_error": result.error,
        }
        if self.setup.search.return_train_score:
            out["train_scores"] = self._sklearn_scores(result.train_scores or {}, result.error)
        return out

    def _sklearn_scores(self, scores: Mapping[str, float], error: str | None) -> Any:
        names = self.setup.score_names
        if names:
            return scores["score"] if self._one_score else dict(scores)
        # a callable scoring: a number, or the dict it returned
        if error is not None and not scores:
            return float(self.setup.search.error_score) if self.setup.search.error_score != "raise" else np.nan
        return scores["score"] if set(scores) == {"score"} else dict(scores)

    @functools.cached_property
    def _one_score(self) -> bool:
        """One scorer named "score" (not a multi-metric one): a result's score is a
        number, as ``_fit_and_score`` gives it (looked up once, not per result)."""
        return list(self.setup.score_names) == ["score"] and not isinstance(self.setup.scorers, _MultimetricScorer)

    def _keep_partial_result(self, exc: BaseException) -> None:
        """Give a search that ended early a ``partial_result`` of every candidate
        completed so far (not refit); the error itself is never hidden."""
        completed = getattr(exc, "completed_candidates", None) or []
        if not completed and not self.candidate_params:
            return
        try:
            params = self.candidate_params + [_untagged(c.params) for c, _ in completed]
            out = self.out + [self._as_sklearn_out(r) for _, folds in completed for r in folds]
            if callable(self.setup.search.scoring):
                _insert_error_scores(out, self.setup.search.error_score)
            search = self.setup.search
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = search._format_results(params, search.n_splits_, out, None)
            from .results import SearchResult

            failures = self.fit_failures + [
                r.error for _, folds in completed for r in folds if r.error is not None
            ]
            exc.partial_result = SearchResult.from_results(  # type: ignore[attr-defined]
                search, results, fit_failures=failures
            )
        except Exception:  # never hide the error that ended the search
            logger.debug("no partial result", exc_info=True)
            return
        logger.warning(
            "the search stopped early (%s) after %d completed candidate(s); they are kept "
            "in the exception's partial_result (cv_results_, best_params_, ...)",
            type(exc).__name__, len(params),
        )


def _score_key(refit: Any, score_names: Mapping[str, Any]) -> str:
    """The metric a strategy is told: the one ``refit`` ranks by (else the first)."""
    if isinstance(refit, str) and (refit in score_names or not score_names):
        return refit  # a callable scoring's names are known only from its results
    if not score_names or "score" in score_names:
        return "score"
    return next(iter(score_names))


def _untagged(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != CANDIDATE_KEY}
