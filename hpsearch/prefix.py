"""Pipeline prefix reuse: fit each prefix once per (prefix params, fold), share it.

A search over ``Pipeline([("vect", TfidfVectorizer()), ("clf", LinearSVC())])`` with
2 values of ``vect__ngram_range`` and 10 of ``clf__C`` would fit the vectorizer 20
times per fold where 2 would do. Here each worker process keeps, for each fold, the
*transformed fold data* of a pipeline's leading steps (the prefix): the rows the next
step is fitted on (the output of ``fit_transform`` on the fold's training rows) and the
rows it is scored on (the fitted prefix's ``transform`` of the test rows, and of the
training rows when train scores are asked for). A candidate whose prefix steps are
configured the same, on the same fold, starts from there and fits only what follows.

How it stays exact
    The steps are fitted and applied exactly as :class:`~sklearn.pipeline.Pipeline`
    does (``fit_transform(X, y)``, or ``fit(X, y).transform(X)``; ``transform`` for
    the scored rows), nested pipelines are flattened into the same sequence of steps,
    and a cache entry is keyed by a content hash of every configured prefix step, so
    two candidates share an entry only if ``Pipeline.fit`` would have done the same
    work for both. scikit-learn's own scorers are applied to the final step and the
    cached transformed test rows (what ``Pipeline.predict``/``score`` compute); any
    other scoring callable gets a fitted :class:`~sklearn.pipeline.Pipeline` built from
    the cached fitted steps. Cached arrays are made read-only, so a step that would
    modify its input in place fails loudly instead of corrupting the next candidate.
    Anything this module does not model (metadata routing, fit params for a prefix
    step, ``transform_input``, callbacks, ``verbose``, a pipeline subclass, an invalid
    pipeline) is evaluated the plain way, by ``Pipeline.fit``.

How fit times are attributed
    Each task reports the time it spent itself: the task that computes a prefix counts
    the prefix's ``fit_transform`` in its ``fit_time`` and the prefix's ``transform`` of
    the scored rows in its ``score_time``; a task that reuses it counts only the steps
    it fits and scores. So the sum of ``fit_time`` over a search is the fitting work
    really done, and ``mean_fit_time`` of candidates sharing a prefix is lower than
    scikit-learn's (time spent waiting for another thread that computes the same
    prefix is counted nowhere).

Memory
    The cache of each process is bounded (:data:`DEFAULT_MAX_BYTES`, or the
    ``prefix_cache`` bytes given to :func:`~hpsearch.run_search`); the least recently
    used entries are evicted, and an entry larger than the whole limit is used once and
    not kept. Entries die with their search's context. :func:`cache_info` reports hits,
    misses, evictions and bytes held.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import os
import pickle
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "CacheInfo",
    "PrefixCache",
    "PrefixCacheConfig",
    "affinity_key",
    "cache_info",
    "clear_cache",
    "default_max_bytes",
    "make_prefix_config",
    "searched_names",
    "fit_and_score",
    "forget_context",
    "is_pipeline",
    "plan_reuse",
]

#: The default memory limit of one process's prefix cache, before the cap at an
#: eighth of the machine's memory (see :func:`default_max_bytes`).
DEFAULT_MAX_BYTES = 1 << 30


def default_max_bytes() -> int:
    """1 GiB, or an eighth of this machine's physical memory when that is less.

    Examples
    --------
    >>> 0 < default_max_bytes() <= DEFAULT_MAX_BYTES
    True
    """
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return DEFAULT_MAX_BYTES
    return int(min(DEFAULT_MAX_BYTES, max(physical // 8, 1 << 20)))


@dataclass(frozen=True)
class PrefixCacheConfig:
    """How a search reuses pipeline prefixes; carried by the evaluation context.

    Attributes
    ----------
    max_bytes : int
        Memory limit of the prefix cache of each worker process.
    searched : tuple of str or None
        The parameter names the search varies. An intermediate prefix step's output is
        kept only when a later prefix step is searched (so that candidates differing
        only there restart from it); the last prefix step's output is always kept.
        None keeps only the last.
    """

    max_bytes: int
    searched: tuple[str, ...] | None = None  # sorted: the context's pickle, so its id, is stable


# -- the cache ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheInfo:
    """Counters of one process's prefix cache (since it was created or cleared)."""

    hits: int
    misses: int
    evictions: int
    rejected: int  # entries larger than the whole limit, used once and not kept
    entries: int
    nbytes: int
    peak_nbytes: int  # the most ever held at once
    max_bytes: int


class PrefixCache:
    """A thread-safe LRU cache bounded by the bytes of what it holds.

    A value is computed once even when several threads ask for the same key at once:
    the first computes it, the others wait for it (a failed or oversized computation
    lets the next one try).

    Parameters
    ----------
    max_bytes : int
        The limit; after each insertion the least recently used entries are evicted
        until the total is within it.

    Examples
    --------
    >>> cache = PrefixCache(max_bytes=100)
    >>> cache.get_or_compute("a", lambda: ("A", 60))
    ('A', False)
    >>> cache.get_or_compute("a", lambda: ("never", 0))
    ('A', True)
    >>> cache.get_or_compute("b", lambda: ("B", 60))  # evicts "a": 120 > 100
    ('B', False)
    >>> info = cache.info()
    >>> (info.hits, info.misses, info.evictions, info.nbytes)
    (1, 2, 1, 60)
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._computing: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self._nbytes = self._peak = 0
        self._hits = self._misses = self._evictions = self._rejected = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], tuple[Any, int]]) -> tuple[Any, bool]:
        """The value under ``key`` and True, or ``compute()``'s value (stored) and False.

        ``compute`` returns ``(value, nbytes)``. Its exceptions propagate (nothing is
        stored).
        """
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self._hits += 1
                    return entry[0], True
                event = self._computing.get(key)
                if event is None:
                    self._computing[key] = threading.Event()
                    self._misses += 1
                    break
            event.wait()  # another thread computes it; look again when it is done
        try:
            value, nbytes = compute()
            with self._lock:
                self._store(key, value, int(nbytes))
            return value, False
        finally:
            with self._lock:
                self._computing.pop(key).set()

    def _store(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            self._rejected += 1
            logger.info("a prefix of %d bytes exceeds the cache limit of %d bytes; not kept", nbytes, self.max_bytes)
            return
        self._entries[key] = (value, nbytes)
        self._nbytes += nbytes
        self._evict()
        self._peak = max(self._peak, self._nbytes)

    def _evict(self) -> None:
        while self._nbytes > self.max_bytes and self._entries:
            _, (_, nbytes) = self._entries.popitem(last=False)
            self._nbytes -= nbytes
            self._evictions += 1

    def set_limit(self, max_bytes: int) -> None:
        """Change the limit, evicting at once what no longer fits."""
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict()

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate``; returns how many."""
        with self._lock:
            doomed = [key for key in self._entries if predicate(key)]
            for key in doomed:
                self._nbytes -= self._entries.pop(key)[1]
            return len(doomed)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._nbytes = self._peak = 0
            self._hits = self._misses = self._evictions = self._rejected = 0

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, self._evictions, self._rejected,
                             len(self._entries), self._nbytes, self._peak, self.max_bytes)


class ContextScope:
    """Keys that tie a process-wide store's entries to an evaluation context: the
    entries of a context are dropped (``discard``) when the context is freed (the end
    of a thread search; a worker evicting the context) or :meth:`forget` is called.
    The prefix cache and the incremental model store (:mod:`hpsearch.incremental`)
    each have one."""

    def __init__(self, discard: Callable[[Callable[[Any], bool]], Any]) -> None:
        self._discard = discard
        self._finalizers: dict[int, Any] = {}  # id(context) -> its finalizer, for contexts seen
        self._lock = threading.Lock()

    def key(self, context: Any) -> int:
        """The key of ``context``'s entries (the first item of their store keys)."""
        ident = id(context)
        with self._lock:
            if ident not in self._finalizers:
                self._finalizers[ident] = weakref.finalize(context, self._drop, ident)
        return ident

    def forget(self, context: Any) -> None:
        """Drop the entries of ``context`` now."""
        with self._lock:
            finalizer = self._finalizers.get(id(context))
        if finalizer is not None:
            finalizer()

    def _drop(self, ident: int) -> None:
        with self._lock:
            self._finalizers.pop(ident, None)
        self._discard(lambda key: isinstance(key, tuple) and key[0] == ident)


_CACHE = PrefixCache(DEFAULT_MAX_BYTES)
_SCOPE = ContextScope(_CACHE.discard)


def cache_info() -> CacheInfo:
    """The counters of this process's prefix cache.

    On a worker machine they count that worker's reuse; with thread workers, the
    searches of this process.

    Examples
    --------
    >>> info = cache_info()
    >>> info.nbytes <= info.max_bytes
    True
    """
    return _CACHE.info()


def clear_cache() -> None:
    """Empty this process's prefix cache and reset its counters."""
    _CACHE.clear()


def forget_context(context: Any) -> None:
    """Drop the cached prefixes of ``context`` now (the search is over)."""
    _SCOPE.forget(context)


# -- sizes and safety ----------------------------------------------------------------------


def nbytes_of(obj: Any) -> int:
    """Bytes held by transformed data: arrays, sparse matrices, dataframes, lists of them.

    Examples
    --------
    >>> nbytes_of(np.zeros((10, 10)))
    800
    """
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if hasattr(obj, "tocsr") and hasattr(obj, "nnz"):  # scipy.sparse
        return sum(int(getattr(obj, name).nbytes) for name in ("data", "indices", "indptr", "row", "col", "offsets")
                   if isinstance(getattr(obj, name, None), np.ndarray))
    memory_usage = getattr(obj, "memory_usage", None)  # pandas
    if callable(memory_usage):
        try:
            return int(np.sum(memory_usage(deep=True)))
        except Exception:
            pass
    if isinstance(obj, (list, tuple)):
        return sys.getsizeof(obj) + sum(nbytes_of(item) for item in obj)
    if isinstance(obj, (str, bytes, int, float)):
        return sys.getsizeof(obj)
    return _pickled_size(obj)


def _pickled_size(obj: Any) -> int:
    size = 0

    def count(buffer: pickle.PickleBuffer) -> None:
        nonlocal size
        size += buffer.raw().nbytes

    try:
        size += len(pickle.dumps(obj, protocol=5, buffer_callback=count))
    except Exception:
        size = sys.getsizeof(obj)
    return size


def _read_only(obj: Any) -> Any:
    """Make the arrays of ``obj`` read-only: a cached input is shared by later fits."""
    arrays: Iterable[Any]
    if isinstance(obj, np.ndarray):
        arrays = (obj,)
    elif hasattr(obj, "tocsr") and hasattr(obj, "nnz"):
        arrays = (getattr(obj, name, None) for name in ("data", "indices", "indptr", "row", "col"))
    else:
        arrays = ()
    for array in arrays:
        if isinstance(array, np.ndarray) and array.flags.writeable:
            array.flags.writeable = False
    return obj


def _step_token(step: Any) -> str | None:
    """A content hash of a configured (unfitted) step; None when it cannot be hashed."""
    if step is None or isinstance(step, str):
        return repr(step)
    try:
        import joblib

        return str(joblib.hash(step))
    except Exception:
        pass
    try:
        import cloudpickle

        return hashlib.blake2b(cloudpickle.dumps(step), digest_size=16).hexdigest()
    except Exception:
        return None


# -- pipeline structure --------------------------------------------------------------------


def is_pipeline(obj: Any) -> bool:
    """Whether prefixes of ``obj`` can be reused: a scikit-learn ``Pipeline``."""
    from sklearn.pipeline import Pipeline

    return type(obj) is Pipeline  # a subclass may fit differently (e.g. resampling steps)


def _flatten(pipeline: Any, prefix: str = "") -> tuple[list[tuple[str, Any]], list[Any]]:
    """The leaf steps of a (nested) pipeline as ``(path, step)`` in fit order, and
    every pipeline met on the way."""
    leaves: list[tuple[str, Any]] = []
    nodes = [pipeline]
    for name, step in pipeline.steps:
        path = f"{prefix}{name}"
        if is_pipeline(step):
            sub_leaves, sub_nodes = _flatten(step, path + "__")
            leaves += sub_leaves
            nodes += sub_nodes
        else:
            leaves.append((path, step))
    return leaves, nodes


def _addresses(name: str, path: str) -> bool:
    """Whether parameter ``name`` sets the step at ``path``, one of its params, or a
    pipeline that contains it."""
    return name == path or name.startswith(path + "__") or path.startswith(name + "__")


def _passthrough(step: Any) -> bool:
    return step is None or (isinstance(step, str) and step == "passthrough")


# -- the plan of one task --------------------------------------------------------------------


@dataclass
class _Level:
    path: str
    step: Any  # this task's configured step, fitted in place on a miss
    chain: tuple[tuple[str, str], ...]  # (path, step hash) of this level and all before it
    stored: bool


@dataclass
class _LevelData:
    fit_out: Any  # what the next step is fitted on
    test_out: Any  # the test rows transformed so far (None when not needed)
    train_out: Any  # the training rows transformed, for train scores (None when not needed)
    fitted: tuple[tuple[str, Any], ...]  # fitted steps so far (kept only without fast scoring)
    fitted_nbytes: int


@dataclass
class ReusePlan:
    """How one task reuses prefixes: the configured pipeline split into levels."""

    estimator: Any
    levels: list[_Level]
    final: Any
    final_fit_params: dict[str, Any]
    fast_scoring: bool


def _fast_scorers(scorers: Mapping[str, Any]) -> bool:
    """Whether every scorer gives the same score on (final step, transformed rows) as
    on (pipeline, raw rows): scikit-learn's response-method scorers and ``score``."""
    try:
        from sklearn.metrics._scorer import _PassthroughScorer, _Scorer
    except ImportError:
        return False
    return all(type(s) in (_Scorer, _PassthroughScorer) for s in scorers.values())


def _unsupported(nodes: list[Any], leaves: list[tuple[str, Any]]) -> str | None:
    for node in nodes:
        if getattr(node, "transform_input", None) is not None:
            return "transform_input is set"
        if getattr(node, "verbose", False):
            return "verbose is set"
        try:
            node._validate_params()
            node._validate_steps()
        except Exception:
            return "the pipeline is invalid (Pipeline.fit reports why)"
    for obj in nodes + [step for _, step in leaves]:
        if getattr(obj, "_skl_callbacks", None):
            return "callbacks are set"
    return None


def plan_reuse(context: Any, estimator: Any) -> ReusePlan | None:
    """How the task fitting ``estimator`` (configured with its candidate's params)
    reuses prefixes, or None when it is evaluated the plain way."""
    config: PrefixCacheConfig | None = getattr(context, "prefix_cache", None)
    if config is None or not is_pipeline(estimator):
        return None
    import sklearn

    if sklearn.get_config().get("enable_metadata_routing", False):
        return None
    leaves, nodes = _flatten(estimator)
    if len(leaves) < 2:
        return None
    reason = _unsupported(nodes, leaves)
    if reason is not None:
        logger.debug("prefixes not reused (%s): Pipeline.fit fits this candidate", reason)
        return None
    final_path, final = leaves[-1]
    if _passthrough(final):
        return None
    final_fit_params = {}
    for key, value in context.fit_params.items():
        if not key.startswith(final_path + "__"):
            return None  # a fit param for a prefix step: Pipeline.fit routes it
        final_fit_params[key[len(final_path) + 2:]] = value
    try:
        if estimator.__sklearn_tags__().input_tags.pairwise:
            return None
    except AttributeError:
        pass
    prefix = [(i, path, step) for i, (path, step) in enumerate(leaves[:-1]) if not _passthrough(step)]
    if not prefix:
        return None
    searched = config.searched
    levels: list[_Level] = []
    chain: tuple[tuple[str, str], ...] = ()
    for position, (index, path, step) in enumerate(prefix):
        token = _step_token(step)
        if token is None:
            return None
        chain = chain + ((path, token),)
        last = position == len(prefix) - 1
        later = [p for p, _ in leaves[index + 1:-1]]
        stored = last or (searched is not None and any(_addresses(n, p) for n in searched for p in later))
        levels.append(_Level(path, step, chain, stored))
    return ReusePlan(estimator, levels, final, final_fit_params, _fast_scorers(context.scorers))


@dataclass
class Outcome:
    """What a task reusing prefixes measured."""

    test_scores: dict[str, float]
    train_scores: dict[str, float] | None
    fit_time: float
    score_time: float
    n_test_samples: int


def _rows(data: Any, indices: np.ndarray) -> Any:
    from sklearn.utils import _safe_indexing

    if data is None:
        return None
    if type(data) is np.ndarray:
        return data[indices]
    return _safe_indexing(data, indices)


class _Task:
    """One task's walk down the levels, fitting only what the cache lacks."""

    def __init__(self, plan: ReusePlan, context: Any, fold: int) -> None:
        self.plan = plan
        self.context = context
        self.fold = fold
        self.train, self.test = context.splits[fold]
        self.y_train = _rows(context.y, self.train)
        self.need_train = bool(context.return_train_score)
        self.fit_time = 0.0
        self.score_time = 0.0
        self.owner = _SCOPE.key(context)

    def level(self, index: int) -> _LevelData:
        if index < 0:
            X_train = _rows(self.context.X, self.train)
            X_test = _rows(self.context.X, self.test) if self.plan.fast_scoring else None
            return _LevelData(X_train, X_test, X_train if self.need_train else None, (), 0)
        level = self.plan.levels[index]
        if not level.stored:
            return self._fit(index)
        key = (self.owner, self.fold, self.need_train, self.plan.fast_scoring, level.chain)

        def compute() -> tuple[_LevelData, int]:
            data = self._fit(index)
            size = data.fitted_nbytes + sum(nbytes_of(x) for x in {id(o): o for o in (
                data.fit_out, data.test_out, data.train_out)}.values())
            return data, size

        data, _ = _CACHE.get_or_compute(key, compute)
        return data

    def _fit(self, index: int) -> _LevelData:
        previous = self.level(index - 1)
        step = self.plan.levels[index].step
        start = time.perf_counter()
        if hasattr(step, "fit_transform"):
            fit_out = step.fit_transform(previous.fit_out, self.y_train)
        else:
            fit_out = step.fit(previous.fit_out, self.y_train).transform(previous.fit_out)
        middle = time.perf_counter()
        test_out = None if previous.test_out is None else step.transform(previous.test_out)
        self.fit_time += middle - start
        self.score_time += time.perf_counter() - middle
        train_out = None if previous.train_out is None else step.transform(previous.train_out)
        fitted, fitted_nbytes = previous.fitted, previous.fitted_nbytes
        if not self.plan.fast_scoring:  # the scorers get a pipeline of the fitted steps
            fitted = fitted + ((self.plan.levels[index].path, step),)
            fitted_nbytes += _pickled_size(step)
        return _LevelData(_read_only(fit_out), _read_only(test_out), _read_only(train_out), fitted, fitted_nbytes)

    def run(self, fit_params: Mapping[str, Any], score_test: Mapping[str, Any],
            score_train: Callable[[], Mapping[str, Any]],
            score: Callable[..., dict[str, float]]) -> Outcome:
        plan, context = self.plan, self.context
        data = self.level(len(plan.levels) - 1)
        start = time.perf_counter()
        plan.final.fit(data.fit_out, self.y_train, **fit_params)
        self.fit_time += time.perf_counter() - start
        y_test = _rows(context.y, self.test)
        start = time.perf_counter()
        if plan.fast_scoring:
            scored, X_test = plan.final, data.test_out
        else:
            scored = plan.estimator.set_params(**dict(data.fitted))
            X_test = _rows(context.X, self.test)
        test_scores = score(scored, X_test, y_test, context.scorers, score_test)
        self.score_time += time.perf_counter() - start
        train_scores = None
        if self.need_train:
            X_train = data.train_out if plan.fast_scoring else _rows(context.X, self.train)
            train_scores = score(scored, X_train, self.y_train, context.scorers, score_train())
        return Outcome(test_scores, train_scores, self.fit_time, self.score_time, len(self.test))


def fit_and_score(plan: ReusePlan, context: Any, fold: int, score_test: Mapping[str, Any],
                  score_train: Callable[[], Mapping[str, Any]],
                  score: Callable[..., dict[str, float]]) -> Outcome:
    """Fit and score one task along ``plan``, reusing and filling this process's cache.

    ``score(estimator, X, y, scorers, params)`` scores; ``score_train`` gives the
    train fold's score params. Fit and scoring errors propagate.
    """
    from .evaluation import _index_fit_params

    if _CACHE.max_bytes != context.prefix_cache.max_bytes:  # the latest search's limit holds
        _CACHE.set_limit(context.prefix_cache.max_bytes)

    task = _Task(plan, context, fold)
    fit_params = _index_fit_params(context.X, plan.final_fit_params, task.train)
    return task.run(fit_params, score_test, score_train, score)


# -- the master's side: which tasks share a prefix ----------------------------------------


def _hashable(value: Any) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return ("repr", type(value).__name__, repr(value))
    return (type(value).__name__, value)


def affinity_key(context: Any) -> Callable[[Mapping[str, Any]], Hashable] | None:
    """A function of a candidate's params naming its prefix, for the scheduler to group
    tasks and route them to the worker that holds their prefix; None when the search
    reuses no prefix.

    Candidates with equal keys share their prefix (a hint: a collision only costs
    reuse, never correctness; the workers key their caches by content).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.svm import SVC
    >>> ctx = SimpleNamespace(estimator=make_pipeline(StandardScaler(), SVC()),
    ...                       prefix_cache=PrefixCacheConfig(1 << 20))
    >>> key = affinity_key(ctx)
    >>> key({"svc__C": 1, "standardscaler__with_mean": True}) == key({"svc__C": 10, "standardscaler__with_mean": True})
    True
    """
    if getattr(context, "prefix_cache", None) is None or not is_pipeline(context.estimator):
        return None
    leaves, _ = _flatten(context.estimator)
    if len(leaves) < 2:
        return None
    final = leaves[-1][0]

    def key(params: Mapping[str, Any]) -> Hashable:
        return tuple((name, _hashable(params[name])) for name in sorted(params)
                     if not (name == final or name.startswith(final + "__")))

    return key


def make_prefix_config(prefix_cache: Any, estimator: Any, space: Any) -> PrefixCacheConfig | None:
    """The prefix reuse of a search of ``estimator`` over ``space``: None when off
    (``prefix_cache=False``) or when ``estimator`` is no Pipeline."""
    from .errors import InvalidParameterError
    from .space import Space

    if isinstance(prefix_cache, bool):
        max_bytes = default_max_bytes() if prefix_cache else 0
    elif isinstance(prefix_cache, numbers.Integral) and int(prefix_cache) > 0:
        max_bytes = int(prefix_cache)
    else:
        raise InvalidParameterError(
            f"prefix_cache must be True, False or a positive number of bytes per worker, got {prefix_cache!r}"
        )
    if not max_bytes or not is_pipeline(estimator):
        return None
    return PrefixCacheConfig(max_bytes, searched_names(space))


def searched_names(space: Any) -> tuple[str, ...] | None:
    """The parameter names a space varies (None when they cannot be told)."""
    from .space import Space

    if isinstance(space, Space):
        subs: Any = space.subspaces
    elif isinstance(space, Mapping):
        subs = [space]
    elif isinstance(space, Sequence) and not isinstance(space, (str, bytes)):
        subs = space
    else:
        return None
    if not all(isinstance(sub, Mapping) for sub in subs):
        return None
    return tuple(sorted({str(n) for sub in subs for n in sub}))
