"""Incremental training for adaptive search: a promoted candidate continues from its model.

With ``incremental=True`` (:func:`hpsearch.run_search`, the adaptive search classes),
the resource is an integer parameter of the estimator and a configuration promoted
from ``r_old`` to ``r_new`` is trained *on from the model it had at* ``r_old`` instead
of from scratch:

* an estimator with ``partial_fit`` (``SGDClassifier``, ``MLPClassifier``, ...) is
  trained by calls to ``partial_fit`` on the whole training fold, one per unit of
  resource (``r_new - r_old`` more calls; a new model gets ``r_new``). The resource
  parameter (``max_iter`` say) is also set on the estimator, so ``best_params_`` and
  the refit (a plain ``fit``) see it, as in dask-ml where ``max_iter`` counts
  ``partial_fit`` calls;
* otherwise an estimator with a ``warm_start`` parameter is fitted again with
  ``warm_start=True`` and the resource raised to ``r_new`` (ensembles add the
  missing ``n_estimators``; an estimator whose iteration parameter counts iterations
  per ``fit`` call, such as ``LogisticRegression``'s ``max_iter``, gets ``r_new``
  more).

Where models live: each worker process (the master for thread workers) keeps the
models it trained in one store, keyed by the search's context, the configuration (its
params without the resource) and the split; a task takes the model with the most
resource not above its own (so two copies of a task never share one) and puts the
model back once trained, unless its resource is the search's largest (no rung
follows). The store is an LRU bounded in bytes (``max_bytes``, 256 MiB per process by
default; a model's size is that of its pickle). A model evicted, held by a lost worker
or by a busy one is no loss of correctness: the task trains a new model from scratch.
The scheduler routes a continuation to the worker it last sent that
(configuration, split) to (``SchedulerState(affinity_exclusive=True)``), so the store
is found whenever that worker is alive and free. A store lives as long as its context:
a thread search drops it at its end, a worker process when it drops the context (a
later search with the very same context may continue from those models; they are the
models that search would train).
"""

from __future__ import annotations

import inspect
import logging
import pickle
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.validation import _check_method_params, _num_samples

from .errors import InvalidParameterError
from .evaluation import FoldResult
from .prefix import ContextScope

logger = logging.getLogger(__name__)

__all__ = ["IncrementalConfig", "check_incremental", "incremental_config", "model_key", "model_affinity",
           "evaluate_incremental", "store_info", "forget_models", "DEFAULT_MAX_BYTES"]

#: Bytes of models each worker process keeps for continuation, by default.
DEFAULT_MAX_BYTES = 256 << 20

#: Reserved key of the candidate index in a task's params (see ``hpsearch._engine``).
_CANDIDATE_KEY = "hpsearch:candidate"


@dataclass(frozen=True)
class IncrementalConfig:
    """How the tasks of an incremental search train (shipped with the context).

    ``method`` is ``"partial_fit"`` or ``"warm_start"``; ``warm_start`` names the
    estimator's warm-start parameter (``"clf__warm_start"`` in a pipeline);
    ``final_resource`` is the largest resource of the search (a model trained that far
    is not kept); ``classes`` is given to a classifier's first ``partial_fit``.
    """

    resource: str
    method: str
    warm_start: str | None = None
    final_resource: int = 0
    classes: Any = None
    max_bytes: int = DEFAULT_MAX_BYTES


def check_incremental(estimator: Any, resource: str) -> tuple[str, str | None]:
    """How ``estimator`` continues training: ``("partial_fit", None)`` or
    ``("warm_start", name)``; an error naming the fix when it cannot.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> check_incremental(SGDClassifier(), "max_iter")
    ('partial_fit', None)
    >>> check_incremental(RandomForestClassifier(), "n_estimators")
    ('warm_start', 'warm_start')
    """
    if resource == "n_samples":
        raise InvalidParameterError(
            "incremental=True continues a model with more of an iteration resource, but "
            "resource='n_samples' trains each step on a new subsample of the folds. Give "
            "resource='max_iter' (partial_fit calls) or 'n_estimators' with max_resources, "
            "or set incremental=False"
        )
    if callable(getattr(estimator, "partial_fit", None)):
        return "partial_fit", None
    prefix = resource.rpartition("__")[0]
    warm_start = f"{prefix}__warm_start" if prefix else "warm_start"
    if warm_start in estimator.get_params():
        return "warm_start", warm_start
    raise InvalidParameterError(
        f"incremental=True needs an estimator that can continue training, but "
        f"{type(estimator).__name__} has no partial_fit method and no {warm_start!r} parameter. "
        "Use an estimator with partial_fit (e.g. SGDClassifier, MLPClassifier: the resource then "
        "counts partial_fit calls), or one with warm_start and an iteration parameter as the "
        "resource (e.g. RandomForestClassifier with resource='n_estimators'), or set "
        "incremental=False to train every step from scratch"
    )


def incremental_config(estimator: Any, resource: str, *, final_resource: int, y: Any,
                       max_bytes: int = DEFAULT_MAX_BYTES) -> IncrementalConfig:
    """The configuration of an incremental search (checked by :func:`check_incremental`)."""
    method, warm_start = check_incremental(estimator, resource)
    classes = None
    if method == "partial_fit" and is_classifier(estimator) and y is not None and np.ndim(y) == 1:
        classes = np.unique(np.asarray(y))
    return IncrementalConfig(resource, method, warm_start, int(final_resource), classes, int(max_bytes))


def model_key(params: Mapping[str, Any], resource: str) -> str:
    """The configuration a task trains: its params without the resource.

    Examples
    --------
    >>> model_key({"alpha": 1, "max_iter": 3}, "max_iter") == model_key({"alpha": 1, "max_iter": 9}, "max_iter")
    True
    """
    from joblib import hash as joblib_hash

    rest = {k: v for k, v in params.items() if k != resource and k != _CANDIDATE_KEY}
    return str(joblib_hash(sorted(rest.items(), key=lambda kv: kv[0])))


def model_affinity(config: IncrementalConfig) -> Callable[[Mapping[str, Any]], Hashable]:
    """The scheduler's affinity function: tasks of one configuration share a key."""
    return lambda params: model_key(params, config.resource)


# -- the per-process store ---------------------------------------------------------------


class ModelStore:
    """Trained models by (context, configuration, split), least recently used dropped
    first, bounded in bytes; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[int, Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def take(self, key: Hashable, upto: int) -> tuple[int, Any] | None:
        """Remove and return ``(resource, model)`` stored under ``key`` if its resource
        is at most ``upto``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] > upto:
                self.misses += 1
                return None
            del self._entries[key]
            self._nbytes -= entry[2]
            self.hits += 1
            return entry[0], entry[1]

    def put(self, key: Hashable, resource: int, model: Any) -> None:
        nbytes = _model_nbytes(model)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old[2]
            if nbytes > self.max_bytes:
                return
            self._entries[key] = (resource, model, nbytes)
            self._nbytes += nbytes
            while self._nbytes > self.max_bytes:
                _, (_, _, size) = self._entries.popitem(last=False)
                self._nbytes -= size
                self.evictions += 1

    def discard(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._entries if predicate(k)]:
                self._nbytes -= self._entries.pop(key)[2]

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"models": len(self._entries), "nbytes": self._nbytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


def _model_nbytes(model: Any) -> int:
    """The size of ``model``'s pickle (arrays counted, not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        head = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    except Exception:  # an unpicklable model: its own object size, a lower bound
        return sys.getsizeof(model)
    return len(head) + sum(b.raw().nbytes for b in buffers)


_STORE = ModelStore(DEFAULT_MAX_BYTES)
_SCOPE = ContextScope(_STORE.discard)  # a context's models go with it


def forget_models(context: Any) -> None:
    """Drop this process's models of ``context`` now (the search is over)."""
    _SCOPE.forget(context)


def store_info() -> dict[str, int]:
    """This process's model store: models held, bytes, hits, misses, evictions.

    Examples
    --------
    >>> sorted(store_info())
    ['evictions', 'hits', 'max_bytes', 'misses', 'models', 'nbytes']
    """
    return _STORE.info()


# -- evaluation ---------------------------------------------------------------------------


def evaluate_incremental(context: Any, params: Mapping[str, Any], split: int) -> FoldResult:
    """Train the configuration of ``params`` on split ``split`` up to its resource,
    continuing from a stored model when this process holds one, and score it as
    scikit-learn's ``_fit_and_score`` does (``context`` is a ``TaskContext``)."""
    from sklearn.model_selection._validation import _score

    from ._engine import _scores_to_wire

    config: IncrementalConfig = context.incremental
    params = {k: v for k, v in params.items() if k != _CANDIDATE_KEY}
    target = int(params[config.resource])
    _STORE.max_bytes = config.max_bytes
    key = (_SCOPE.key(context), model_key(params, config.resource), split)
    train, test = context.splits[split]
    X, y = context.X, context.y
    fit_params = _check_method_params(X, params=context.fit_params, indices=train)
    start = time.time()
    try:
        stored = _STORE.take(key, target)
        if stored is None:
            done, model = 0, clone(context.estimator).set_params(**clone(dict(params), safe=False))
        else:
            done, model = stored
        X_train, y_train = _safe_split(model, X, y, train)
        X_test, y_test = _safe_split(model, X, y, test, train)
        _train(model, config, done, target, X_train, y_train, fit_params)
    except Exception as exc:
        failed = FoldResult.failed(
            context.scorers, context.error_score, context.return_train_score, traceback.format_exc(),
            fit_time=time.time() - start, n_test_samples=len(test),
        )
        if context.error_score == "raise":  # the scheduler raises it
            failed.exception = exc
        return failed
    fit_time = time.time() - start
    test_scores = _score(model, X_test, y_test, context.scorer,
                         _check_method_params(X, params=context.score_params, indices=test), context.error_score)
    score_time = time.time() - start - fit_time
    train_scores = None
    if context.return_train_score:
        train_scores = _scores_to_wire(
            _score(model, X_train, y_train, context.scorer,
                   _check_method_params(X, params=context.score_params, indices=train), context.error_score),
            None, context.scorers,
        )
    if target < config.final_resource:
        _STORE.put(key, target, model)
    return FoldResult(
        test_scores=_scores_to_wire(test_scores, None, context.scorers),
        train_scores=train_scores,
        fit_time=fit_time,
        score_time=score_time,
        n_test_samples=_num_samples(X_test),
    )


def _train(model: Any, config: IncrementalConfig, done: int, target: int, X: Any, y: Any,
           fit_params: dict[str, Any]) -> None:
    """Bring ``model`` (trained with ``done`` of the resource) to ``target``."""
    if config.method == "partial_fit":
        if done:
            model.set_params(**{config.resource: target})
        kwargs = dict(fit_params)
        if config.classes is not None and "classes" in inspect.signature(model.partial_fit).parameters:
            kwargs["classes"] = config.classes
        for _ in range(target - done):
            if y is None:
                model.partial_fit(X, **kwargs)
            else:
                model.partial_fit(X, y, **kwargs)
        return
    if done == target:
        return  # the model already has this resource (a rung that repeats it)
    if done:
        assert config.warm_start is not None
        model.set_params(**{config.warm_start: True, config.resource: target})
    if y is None:
        model.fit(X, **fit_params)
    else:
        model.fit(X, y, **fit_params)
