"""Bayesian optimisation on scikit-optimize's ``Optimizer``.

This module is the only place hpsearch imports scikit-optimize (``skopt``). That
project is no longer maintained; keeping it behind :class:`BayesStrategy` means a
break, or a replacement, touches one file, and ``tests/strategies`` would catch it.

Three translations happen here and nowhere else:

* dimensions: hpsearch ``Real``/``Integer``/``Categorical`` to skopt's. Categorical
  choices go to skopt as their indices, so any Python object (None, tuples,
  estimators) can be a choice and comes back as the very same object;
* direction: hpsearch maximises scores, skopt minimises, so skopt is told
  ``-score``;
* failures: a NaN (or infinite) score is told as the worst finite score seen so far
  (see :class:`BayesStrategy`).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from skopt import Optimizer
from skopt.space import Categorical as SkCategorical
from skopt.space import Integer as SkInteger
from skopt.space import Real as SkReal

from ..errors import InvalidParameterError
from ..space import Categorical, Dimension, Integer, Real, Space, SpaceSpec
from .._validation import check_integer
from .base import Candidate, check_n_iter

__all__ = ["BayesStrategy", "DEFAULT_BATCH_SIZE", "SURROGATES", "ACQ_FUNCS"]

#: Candidates per synchronous batch when ``batch_size`` is None.
DEFAULT_BATCH_SIZE = 5
#: Surrogates that work with scikit-optimize 0.10.2 on scikit-learn 1.9 / numpy 2.4.
#: "GBRT" (needs ``np.in1d``, removed in numpy 2.4) and "dummy" (scikit-learn tags)
#: break there, so they are not offered.
SURROGATES = ("GP", "RF", "ET")
ACQ_FUNCS = ("gp_hedge", "EI", "LCB", "PI")

_MAX_SEED = 2**31 - 1
_DUPLICATE_WARNING = "The objective has been evaluated at point"


class _SubSearch:
    """One sub-space: its skopt ``Optimizer``, the dimension mapping, its share of ``n_iter``."""

    def __init__(
        self,
        dims: dict[str, Dimension],
        quota: int,
        seed: int,
        n_initial_points: int,
        surrogate: str,
        acq_func: str,
    ) -> None:
        self.names = list(dims)
        self.quota = quota
        self.handed_out = 0
        self.rng = np.random.RandomState(seed)
        # A single-choice categorical is a constant: skopt gets only the free dimensions.
        self.fixed = {
            n: d.choices[0] for n, d in dims.items() if isinstance(d, Categorical) and len(d.choices) == 1
        }
        self.free = {n: d for n, d in dims.items() if n not in self.fixed}
        self.size = _finite_size(self.free.values())
        self.tried: set[tuple] = set()  # every point handed out, as skopt coordinates
        self.pending: dict[int, list] = {}  # candidate id -> point, not told yet
        self.optimizer: Optimizer | None = None
        if self.free:
            self.optimizer = Optimizer(
                [_to_skopt(d) for d in self.free.values()],
                base_estimator=surrogate,
                n_initial_points=n_initial_points,
                acq_func=acq_func,
                random_state=seed,
                model_queue_size=1,  # keep only the latest surrogate in memory
            )

    @property
    def remaining(self) -> int:
        return self.quota - self.handed_out

    def propose(self, k: int) -> list[list]:
        """``k`` new points, with a constant liar over the points still pending."""
        if self.optimizer is None:
            return [[] for _ in range(k)]
        opt = self.optimizer
        points: list[list] = []
        if not opt.yi:  # nothing learnt yet: random points (lies about nothing mean nothing)
            for _ in range(k):
                points.append(self._unique(self._random_point()))
            return points
        lies = list(self.pending.values())
        with warnings.catch_warnings():
            # skopt warns when its proposal was evaluated before; _unique handles that.
            warnings.filterwarnings("ignore", message=_DUPLICATE_WARNING, category=UserWarning)
            if not lies and k == 1:
                # The proposal skopt prepared at the last tell: no model fit here.
                return [self._unique(_plain_point(opt.ask()))]
            # Constant liar ("CL-min"): pending points are told the best value seen so far,
            # on a copy, so the next proposals move away from them.
            liar = copy.deepcopy(opt)
            liar.rng = np.random.RandomState(self.rng.randint(_MAX_SEED))
            if opt.models and isinstance(opt.models[-1], GaussianProcessRegressor):
                # Lies need no new kernel hyperparameters: keep the fitted ones, so a lie
                # costs one Cholesky factorisation instead of a likelihood optimisation.
                liar.base_estimator_ = clone(opt.base_estimator_).set_params(
                    kernel=opt.models[-1].kernel_, optimizer=None
                )
            lie = float(np.min(opt.yi))
            if lies:
                liar.tell(lies, [lie] * len(lies))
            for i in range(k):
                x = self._unique(_plain_point(liar.ask()))
                points.append(x)
                if i < k - 1:
                    liar.tell(x, lie)
        return points

    def observe(self, points: list[list], losses: list[float]) -> None:
        """Tell skopt several results at once (one surrogate fit)."""
        if self.optimizer is not None and points:
            self.optimizer.tell(points, losses)

    def params(self, x: Sequence[Any]) -> dict[str, Any]:
        values = dict(self.fixed)
        for (name, dim), v in zip(self.free.items(), x):
            values[name] = _from_skopt(dim, v)
        return {name: values[name] for name in self.names}

    def _random_point(self) -> list:
        assert self.optimizer is not None
        return _plain_point(self.optimizer.space.rvs(n_samples=1, random_state=self.rng)[0])

    def _unique(self, x: list) -> list:
        """``x``, or an untried point when ``x`` was handed out already."""
        key = tuple(x)
        if key in self.tried:
            for _ in range(100):
                x = self._random_point()
                if tuple(x) not in self.tried:
                    break
            else:
                if self.size is not None:  # a small finite space nearly exhausted
                    untried = [list(p) for p in self._all_points() if p not in self.tried]
                    if untried:
                        x = untried[self.rng.randint(len(untried))]
        self.tried.add(tuple(x))
        return x

    def _all_points(self) -> itertools.product:
        axes = []
        for dim in self.free.values():
            if isinstance(dim, Categorical):
                axes.append(range(len(dim.choices)))
            else:
                assert isinstance(dim, Integer)
                axes.append(range(dim.low, dim.high + 1))
        return itertools.product(*axes)


_blas_controller: Any = None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run the surrogate's linear algebra on one BLAS thread, whatever the pool set.

    Two reasons. Reproducibility: multi-threaded BLAS sums in another order, and the
    acquisition optimiser turns last-bit differences into different candidates; with
    ``ThreadWorkers(1)`` BLAS has all the cores, with ``ThreadWorkers(4)`` one each,
    so without this the candidates would depend on the number of workers. Speed: the
    matrices have a few hundred rows at most, and extra threads only add
    synchronisation (several times slower under load).

    The pool's limit is process-wide and set by the thread that started the search;
    threadpoolctl (>= 3.6) lets only that thread change OpenBLAS's limit, and the
    strategy runs on a thread of its own, so the libraries are set directly. Fits
    running meanwhile get one BLAS thread until the proposal is made.
    """
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    libs = [lib for lib in _blas_controller.lib_controllers if lib.user_api == "blas"]
    before = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        _set_blas_threads(lib, 1)
    try:
        yield
    finally:
        for lib, n in zip(libs, before):
            if n is not None:
                _set_blas_threads(lib, n)


def _set_blas_threads(lib: Any, n: int) -> None:
    setter = getattr(lib, "_real_set_num_threads", None) or lib.set_num_threads
    setter(n)


def _to_skopt(dim: Dimension) -> Any:
    if isinstance(dim, Real):
        return SkReal(float(dim.low), float(dim.high), prior=dim.prior)
    if isinstance(dim, Integer):
        return SkInteger(dim.low, dim.high, prior=dim.prior)
    if isinstance(dim, Categorical):
        return SkCategorical(list(range(len(dim.choices))))
    raise TypeError(f"no scikit-optimize dimension for {dim!r}")  # Space.for_bayes refused it


def _from_skopt(dim: Dimension, value: Any) -> Any:
    if isinstance(dim, Real):
        return min(dim.high, max(dim.low, float(value)))
    if isinstance(dim, Integer):
        return min(dim.high, max(dim.low, int(round(value))))
    assert isinstance(dim, Categorical)
    return dim.choices[int(value)]


def _plain_point(x: Sequence[Any]) -> list:
    """skopt's numpy scalars to Python ints and floats: hashable, comparable, exact."""
    return [v.item() if isinstance(v, np.generic) else v for v in x]


def _finite_size(dims: Any) -> int | None:
    size = 1
    for dim in dims:
        if isinstance(dim, Categorical):
            size *= len(dim.choices)
        elif isinstance(dim, Integer):
            size *= dim.high - dim.low + 1
        else:
            return None
    return size


def _seed_from(random_state: Any) -> np.random.RandomState:
    if isinstance(random_state, np.random.Generator):
        return np.random.RandomState(int(random_state.integers(_MAX_SEED)))
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if random_state is None or (
        isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)
    ):
        return np.random.RandomState(None if random_state is None else int(random_state))
    raise InvalidParameterError(
        f"random_state must be an int, a numpy RandomState or Generator, or None; got {random_state!r}"
    )


def _check_choice(name: str, value: Any, allowed: Sequence[str], hint: str = "") -> str:
    if value not in allowed:
        raise InvalidParameterError(f"{name} must be one of {list(allowed)}, got {value!r}{hint}")
    return value


class BayesStrategy:
    """Bayesian optimisation: each candidate is chosen by a surrogate model of the scores.

    Built on scikit-optimize's ``Optimizer`` (ask/tell). The first
    ``n_initial_points`` candidates of each sub-space are random; after that a
    surrogate fitted to the scores so far proposes the point that maximises the
    acquisition function.

    Parameters
    ----------
    space : dict, list of dicts or Space
        :class:`~hpsearch.Real`, :class:`~hpsearch.Integer`,
        :class:`~hpsearch.Categorical`, lists of values (categorical), and
        ``scipy.stats`` ``uniform`` / ``loguniform`` (taken as a ``Real``). Other
        distributions are refused. A list of dicts searches each sub-space with
        its own optimizer; ``n_iter`` is split evenly between them (the first
        sub-spaces get the remainder) and their candidates are interleaved in turn.
    n_iter : int
        Candidates in all. Capped, with a warning, at the number of points of a
        sub-space that has only integer and categorical dimensions.
    random_state : int, numpy RandomState or Generator, or None
        Seed. With a fixed seed the candidates do not depend on the number of
        workers nor on the order results arrive in (unless ``asynchronous``).
    n_initial_points : int
        Random candidates per sub-space before the surrogate takes over.
    surrogate : {"GP", "RF", "ET"}
        Gaussian process, random forest or extra trees. (scikit-optimize's "GBRT"
        and "dummy" do not work with numpy 2.4 / scikit-learn 1.9.)
    acq_func : {"gp_hedge", "EI", "LCB", "PI"}
        Acquisition function; ``"gp_hedge"`` picks among the other three online.
    batch_size : int or None
        Candidates proposed together in synchronous mode (default
        ``DEFAULT_BATCH_SIZE`` = 5, never derived from the number of workers, so that
        results are reproducible on any pool). The next batch is proposed once every
        candidate of the current one has a score; larger batches keep more workers
        busy, smaller ones learn from more scores per proposal.
    asynchronous : bool
        False (default): synchronous batches, reproducible. True: a new candidate
        whenever one is asked for, proposed with a constant liar over the candidates
        still running; more throughput, but the candidates depend on timing.

    Notes
    -----
    *Several candidates in flight.* Candidates proposed while others have no score
    yet use the constant-liar heuristic ("CL-min"): the pending points are told
    the best score seen so far on a copy of the optimizer, so each new proposal
    moves away from them. No point is handed out twice; in a small discrete space
    a repeated proposal is replaced by an untried random point.

    *Order.* In synchronous mode scores are buffered and told to the optimizer in
    candidate-id order, in one go per batch; the next batch is computed inside
    the ``tell`` that completes a batch, so ``ask`` itself is cheap. The scheduler
    runs ``tell`` on its strategy thread and keeps dispatching queued tasks.

    *Failed fits.* A NaN or infinite score is told as the worst finite score seen
    so far (the worst when its batch is told). Failures seen before any finite
    score are held back and told once the first finite score arrives; until then
    the optimizer keeps proposing random points.

    Examples
    --------
    >>> from hpsearch import Real, Integer
    >>> from hpsearch.strategies import BayesStrategy
    >>> s = BayesStrategy({"x": Real(-2.0, 2.0), "n": Integer(1, 3)}, n_iter=6,
    ...                   random_state=0, n_initial_points=3, batch_size=3)
    >>> while not s.finished:
    ...     for c in s.ask(2):
    ...         s.tell(c.id, -(c.params["x"] - 1) ** 2 - c.params["n"])
    >>> len(s.history), s.finished
    (6, True)
    """

    def __init__(
        self,
        space: SpaceSpec,
        n_iter: int = 10,
        random_state: Any = None,
        n_initial_points: int = 10,
        surrogate: str = "GP",
        acq_func: str = "gp_hedge",
        batch_size: int | None = None,
        asynchronous: bool = False,
    ) -> None:
        self.space = Space.from_spec(space).for_bayes()
        self.n_iter = check_n_iter(n_iter)
        self.n_initial_points = check_integer("n_initial_points", n_initial_points, 1)
        self.surrogate = _check_choice(
            "surrogate", surrogate, SURROGATES,
            " ('GBRT' and 'dummy' do not work with scikit-optimize 0.10.2 on numpy 2.4 / scikit-learn 1.9)"
            if surrogate in ("GBRT", "gbrt", "dummy", "DUMMY") else "",
        )
        self.acq_func = _check_choice("acq_func", acq_func, ACQ_FUNCS)
        self.batch_size = DEFAULT_BATCH_SIZE if batch_size is None else check_integer("batch_size", batch_size, 1)
        if not isinstance(asynchronous, bool):
            raise InvalidParameterError(f"asynchronous must be True or False, got {asynchronous!r}")
        self.asynchronous = asynchronous
        rng = _seed_from(random_state)

        n_sub = len(self.space.subspaces)
        self._subs: list[_SubSearch] = []
        for i, dims in enumerate(self.space.subspaces):
            quota = self.n_iter // n_sub + (1 if i < self.n_iter % n_sub else 0)
            sub = _SubSearch(dims, quota, int(rng.randint(_MAX_SEED)), self.n_initial_points, self.surrogate, self.acq_func)
            if sub.size is not None and quota > sub.size:
                warnings.warn(
                    f"n_iter={self.n_iter} gives {quota} candidates to a sub-space of only "
                    f"{sub.size} points ({sorted(dims)}); running {sub.size} there",
                    UserWarning,
                    stacklevel=2,
                )
                sub.quota = sub.size
            self._subs.append(sub)
        self._total = sum(s.quota for s in self._subs)
        self._turn = 0  # next sub-space in the round-robin
        self._next_id = 0
        self._owner: dict[int, tuple[_SubSearch, list]] = {}  # pending id -> (sub-space, point)
        self._worst: float | None = None  # the largest finite loss told so far
        self._held: list[tuple[_SubSearch, list]] = []  # failures before any finite score
        #: ``(candidate, score)`` of every told candidate, in the order told.
        self.history: list[tuple[Candidate, float]] = []
        self._candidates: dict[int, Candidate] = {}
        # Synchronous mode: the current batch, how much of it was handed out, its scores.
        self._batch: list[Candidate] = []
        self._handed = 0
        self._scores: dict[int, float] = {}
        if not self.asynchronous:
            self._batch = self._propose(min(self.batch_size, self._total))

    # -- the Strategy protocol --------------------------------------------------------

    def ask(self, n: int) -> list[Candidate]:
        """Up to ``n`` new candidates; ``[]`` while a synchronous batch awaits scores."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise InvalidParameterError(f"ask(n) needs an integer n >= 0, got {n!r}")
        if self.asynchronous:
            k = min(int(n), self._total - self._next_id)
            if k == 0:
                return []
            with _one_blas_thread():
                return self._propose(k)
        out = self._batch[self._handed : self._handed + n]
        self._handed += len(out)
        return list(out)

    def tell(self, candidate_id: int, score: float) -> None:
        """Record a candidate's score (higher is better; NaN for a failed fit)."""
        handed_out = candidate_id in self._owner and (
            self.asynchronous or candidate_id < self._batch[0].id + self._handed
        )
        told = candidate_id in self._scores or (
            candidate_id in self._candidates and candidate_id not in self._owner
        )
        if told or not handed_out:
            state = "was told already" if told else "was never asked for"
            raise InvalidParameterError(f"tell: candidate {candidate_id!r} {state}")
        score = float(score)
        self.history.append((self._candidates[candidate_id], score))
        if self.asynchronous:
            with _one_blas_thread():
                self._observe([(candidate_id, score)])
            return
        self._scores[candidate_id] = score
        if len(self._scores) == len(self._batch):
            scores = sorted(self._scores.items())  # candidate-id order: timing does not matter
            self._scores = {}
            with _one_blas_thread():
                self._observe(scores)
                # The next batch is computed now, so that ask() is instant.
                self._batch = self._propose(min(self.batch_size, self._total - self._next_id))
            self._handed = 0

    @property
    def finished(self) -> bool:
        """True once every one of the ``total`` candidates was handed out."""
        if self.asynchronous:
            return self._next_id >= self._total
        return self._next_id >= self._total and self._handed >= len(self._batch)

    @property
    def total(self) -> int:
        """Candidates in all: ``n_iter``, less any cap on small discrete sub-spaces."""
        return self._total

    # -- internals ------------------------------------------------------------------------

    def _propose(self, k: int) -> list[Candidate]:
        """``k`` new candidates, taking the sub-spaces in turn."""
        counts: dict[int, int] = {}
        order: list[int] = []
        for _ in range(k):
            while self._subs[self._turn].remaining - counts.get(self._turn, 0) <= 0:
                self._turn = (self._turn + 1) % len(self._subs)
            counts[self._turn] = counts.get(self._turn, 0) + 1
            order.append(self._turn)
            self._turn = (self._turn + 1) % len(self._subs)
        points = {i: iter(self._subs[i].propose(c)) for i, c in counts.items()}
        candidates = []
        for i in order:
            sub, x = self._subs[i], next(points[i])
            cand = Candidate(self._next_id, sub.params(x))
            sub.handed_out += 1
            sub.pending[cand.id] = x
            self._owner[cand.id] = (sub, x)
            self._candidates[cand.id] = cand
            candidates.append(cand)
            self._next_id += 1
        return candidates

    def _observe(self, told: list[tuple[int, float]]) -> None:
        """Tell skopt (which minimises) ``-score``; failures get the worst finite loss."""
        finite = [-s for _, s in told if math.isfinite(s)]
        if finite:
            self._worst = max(finite) if self._worst is None else max(self._worst, *finite)
        per_sub: dict[int, tuple[list, list]] = {}
        for cid, score in told:
            sub, x = self._owner.pop(cid)
            del sub.pending[cid]
            if math.isfinite(score):
                loss = -score
            elif self._worst is not None:
                loss = self._worst
            else:
                self._held.append((sub, x))
                continue
            xs, ys = per_sub.setdefault(id(sub), ([], []))
            xs.append(x)
            ys.append(loss)
        if self._worst is not None and self._held:
            for sub, x in self._held:
                xs, ys = per_sub.setdefault(id(sub), ([], []))
                xs.append(x)
                ys.append(self._worst)
            self._held = []
        for sub in self._subs:
            if id(sub) in per_sub:
                sub.observe(*per_sub[id(sub)])

    def __repr__(self) -> str:
        mode = "asynchronous" if self.asynchronous else f"batch_size={self.batch_size}"
        return (
            f"BayesStrategy(n_iter={self.n_iter}, surrogate={self.surrogate!r}, "
            f"acq_func={self.acq_func!r}, {mode})"
        )
