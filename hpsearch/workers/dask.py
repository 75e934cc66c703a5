"""Dask workers: hpsearch tasks on a ``dask.distributed`` cluster.

:class:`DaskWorkers` turns every worker of a Dask cluster into an hpsearch worker with
as many slots as it has threads. The Dask scheduler is used for what it is good at —
knowing which machines are up — while hpsearch's own scheduler decides which task runs
where, so strategies, first-result-wins and requeueing behave as on any other pool.

Design:

* A worker plugin (:class:`HPSearchPlugin`) adds a few comm handlers to every Dask
  worker, current and future. The client calls them directly on the worker (Dask's
  worker RPC, the path Dask actors use), not through the Dask scheduler: a task, or a
  batch of tiny tasks (``submit_many``, sized by hpsearch's scheduler as for the local
  pools), is one round trip, client to worker and back.
* The evaluation context travels once per Dask worker: serialized once by
  :func:`hpsearch.serialization.dumps`, named by its content id, and kept in a small
  per-process cache on the worker. A worker that already holds the id receives
  nothing, so a second search on the same data sends only params.
* Membership is a pure state machine (:class:`Membership`) fed with the scheduler's
  worker list, polled on the client's event loop, and with the outcome of every call.
  Workers added to the cluster get the context and join the search at once; a worker
  that is removed, or whose connection breaks, is reported lost and hpsearch requeues
  its tasks.

All client-side I/O runs on the Dask client's event loop thread; ``submit`` only
schedules a callback there, so it never blocks.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import msgpack
import numpy as np

from ..errors import InvalidParameterError, MissingDependencyError, NoWorkersError
from ..evaluation import EvaluationContext, FoldResult, clip_text, evaluate
from .base import Emit, PoolFailed, Results, Task, TaskFailed, TaskFinished, WorkerJoined, WorkerLost
from .calls import buffer_id

try:  # the plugin must subclass Dask's base class when Dask is there; hpsearch imports without it
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - exercised only without the dask extra
    _WorkerPluginBase = object  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

__all__ = ["DaskWorker", "DaskWorkers", "HPSearchPlugin", "Membership", "buffer_id", "require_distributed"]

_POOL_IDS = itertools.count(1)
#: The name the worker plugin is registered under (one per cluster, shared by pools).
PLUGIN_NAME = "hpsearch"
#: Worker statuses that may take tasks; any other status counts as gone.
_USABLE = ("running", "paused")
#: How long a just-started Dask worker may take to run the plugin's setup.
_PLUGIN_WAIT = 10.0
#: Dask workers a call is tried on before its future fails (each lost while running it).
MAX_CALL_ATTEMPTS = 3


def require_distributed() -> Any:
    """Import ``distributed``, or raise :class:`~hpsearch.errors.MissingDependencyError`."""
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(
            f"running on a Dask cluster needs dask.distributed, which cannot be imported ({exc}). "
            "Install it with: pip install 'hpsearch[dask]'"
        ) from exc
    return distributed


# --------------------------------------------------------------------------- worker side


class _WorkerCache:
    """What one Dask worker process keeps between calls: contexts and buffers by content id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.contexts: collections.OrderedDict[str, EvaluationContext] = collections.OrderedDict()
        self.buffers: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.buffer_bytes = 0
        self.max_contexts = 2
        self.max_buffer_bytes = 2 << 30
        self.counters: collections.Counter[str] = collections.Counter()

    def context(self, cid: str) -> EvaluationContext | None:
        with self.lock:
            context = self.contexts.get(cid)
            if context is not None:
                self.contexts.move_to_end(cid)
            return context

    def add_context(self, cid: str, context: EvaluationContext) -> None:
        with self.lock:
            self.contexts[cid] = context
            self.contexts.move_to_end(cid)
            while len(self.contexts) > self.max_contexts:
                self.contexts.popitem(last=False)

    def buffer(self, bid: str) -> Any:
        with self.lock:
            buffer = self.buffers.get(bid)
            if buffer is not None:
                self.buffers.move_to_end(bid)
            return buffer

    def add_buffer(self, bid: str, buffer: Any) -> None:
        nbytes = memoryview(buffer).nbytes
        with self.lock:
            if bid in self.buffers:
                return
            self.buffers[bid] = buffer
            self.buffer_bytes += nbytes
            while self.buffer_bytes > self.max_buffer_bytes and len(self.buffers) > 1:
                _, old = self.buffers.popitem(last=False)
                self.buffer_bytes -= memoryview(old).nbytes


_CACHE = _WorkerCache()


def _handlers(worker: Any) -> dict[str, Any]:
    """The comm handlers the plugin adds to ``worker`` (each returns a status dict)."""
    from ..serialization import loads

    async def hpsearch_context(cid: str, frames: list[Any] | None = None) -> dict[str, Any]:
        if _CACHE.context(cid) is not None:
            return {"status": "ok", "loaded": False}
        if frames is None:
            return {"status": "missing"}
        try:
            context = loads(frames)
        except Exception:
            return {"status": "error", "error": clip_text(traceback.format_exc())}
        _CACHE.add_context(cid, context)
        _CACHE.counters["contexts_loaded"] += 1
        return {"status": "ok", "loaded": True}

    async def hpsearch_tasks(cid: str, tasks: list[Any]) -> dict[str, Any]:
        """Tasks, ``[params, fold]`` pairs (one, or a batch of tiny ones), run one by one,
        in order, on one thread; one reply with every result (``["ok", packed]`` or
        ``["error", text]``). Each result is packed here: Dask walks every reply with
        sizeof (to decide whether to offload its serialization) and packs it again; one
        bytes object is one step."""
        context = _CACHE.context(cid)
        if context is None:
            return {"status": "missing"}

        def run_all() -> list[list[Any]]:
            out: list[list[Any]] = []
            for params, fold in tasks:
                try:
                    if isinstance(params, (list, tuple)):
                        params = loads(params)
                    result = evaluate(context, params, fold)
                except Exception:  # evaluate keeps fit errors as data: a bug or bad params
                    out.append(["error", clip_text(traceback.format_exc())])
                    continue
                out.append(["ok", msgpack.packb(result.to_message(), use_bin_type=True)])
            return out

        results = await asyncio.get_running_loop().run_in_executor(worker.executors["default"], run_all)
        _CACHE.counters["tasks"] += len(results)
        return {"status": "ok", "results": results}

    async def hpsearch_buffers(buffers: dict[str, Any]) -> dict[str, Any]:
        for bid, buffer in buffers.items():
            _CACHE.add_buffer(bid, buffer)
            _CACHE.counters["buffers_received"] += 1
        return {"status": "ok"}

    async def hpsearch_call(head: list[Any], ids: list[str]) -> dict[str, Any]:
        from distributed.protocol import to_serialize

        frames = [_CACHE.buffer(bid) for bid in ids]
        missing = [bid for bid, frame in zip(ids, frames) if frame is None]
        if missing:
            return {"status": "missing", "ids": missing}
        try:
            func = loads([*head, *frames])
        except Exception:
            return {"status": "error", "error": clip_text(traceback.format_exc())}
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(worker.executors["default"], func)
        except Exception:
            return {"status": "error", "error": clip_text(traceback.format_exc())}
        _CACHE.counters["calls"] += 1
        return {"status": "ok", "result": to_serialize(out)}

    async def hpsearch_stats() -> dict[str, Any]:
        return {"status": "ok", "counters": dict(_CACHE.counters),
                "contexts": list(_CACHE.contexts), "buffers": list(_CACHE.buffers)}

    return {
        "hpsearch_context": hpsearch_context,
        "hpsearch_tasks": hpsearch_tasks,
        "hpsearch_buffers": hpsearch_buffers,
        "hpsearch_call": hpsearch_call,
        "hpsearch_stats": hpsearch_stats,
    }


class HPSearchPlugin(_WorkerPluginBase):
    """Adds hpsearch's comm handlers to a Dask worker (registered by :class:`DaskWorkers`).

    Parameters
    ----------
    max_contexts : int
        Evaluation contexts each worker process keeps (least recently used dropped).
    max_buffer_bytes : int
        Bytes of content-addressed buffers (the joblib backend's) each worker keeps.
    """

    name = PLUGIN_NAME
    idempotent = False  # a new registration replaces the settings

    def __init__(self, max_contexts: int = 2, max_buffer_bytes: int = 2 << 30) -> None:
        self.max_contexts = max_contexts
        self.max_buffer_bytes = max_buffer_bytes

    def setup(self, worker: Any) -> None:
        _CACHE.max_contexts = self.max_contexts
        _CACHE.max_buffer_bytes = self.max_buffer_bytes
        worker.handlers.update(_handlers(worker))

    def teardown(self, worker: Any) -> None:
        for name in _handlers(worker):
            worker.handlers.pop(name, None)


# --------------------------------------------------------------------------- membership


@dataclass(frozen=True, slots=True)
class Join:
    """Ship the context to a newly listed worker (then report ``Membership.ready``)."""

    address: str
    nthreads: int


@dataclass(frozen=True, slots=True)
class Lose:
    """A worker that had joined the search is gone: report ``WorkerLost``."""

    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class Starve:
    """No worker has been ready for ``join_timeout`` seconds: the search cannot go on."""

    waited: float


Action = Union[Join, Lose, Starve]


class Membership:
    """Which Dask workers serve one search: events in, actions out, no I/O.

    A worker listed by the scheduler is *joining* until its context is loaded, then
    *ready*; one whose call failed is *dead* for as long as the scheduler still lists
    it (a worker restarted at the same address is new once it was delisted).

    Examples
    --------
    >>> m = Membership(join_timeout=5.0, now=0.0)
    >>> m.listed({"tcp://a:1": 2}, now=0.0)
    [Join(address='tcp://a:1', nthreads=2)]
    >>> m.ready("tcp://a:1", now=0.1)
    True
    >>> m.failed("tcp://a:1", "connection closed", now=1.0)
    [Lose(address='tcp://a:1', reason='connection closed')]
    >>> m.listed({}, now=7.0)
    [Starve(waited=6.0)]
    """

    def __init__(self, join_timeout: float, now: float) -> None:
        self.join_timeout = join_timeout
        self.state: dict[str, str] = {}
        self._empty_since: float | None = now
        self._starved = False

    @property
    def n_ready(self) -> int:
        return sum(1 for s in self.state.values() if s == "ready")

    def listed(self, workers: Mapping[str, int], now: float) -> list[Action]:
        """The scheduler's usable workers now (address -> threads)."""
        actions: list[Action] = []
        for address in list(self.state):
            if address not in workers:
                if self.state.pop(address) == "ready":
                    actions.append(Lose(address, "it left the Dask cluster"))
        for address, nthreads in workers.items():
            if address not in self.state and nthreads > 0:
                self.state[address] = "joining"
                actions.append(Join(address, int(nthreads)))
        return actions + self.tick(now)

    def ready(self, address: str, now: float) -> bool:
        """The worker holds the context; True when it must be announced to the search."""
        if self.state.get(address) != "joining":
            return False
        self.state[address] = "ready"
        self._empty_since = None
        return True

    def failed(self, address: str, reason: str, now: float) -> list[Action]:
        """A call to the worker failed at the connection level."""
        previous = self.state.get(address)
        if previous in (None, "dead"):
            return []
        self.state[address] = "dead"
        actions: list[Action] = [Lose(address, reason)] if previous == "ready" else []
        return actions + self.tick(now)

    def tick(self, now: float) -> list[Action]:
        if self.n_ready:
            self._empty_since = None
            return []
        if self._empty_since is None:
            self._empty_since = now
        if not self._starved and now - self._empty_since >= self.join_timeout:
            self._starved = True
            return [Starve(now - self._empty_since)]
        return []


# --------------------------------------------------------------------------- client side

#: Serialized params up to this size travel as two msgpack byte strings (below: why).
INLINE_PARAMS_BYTES = 64 * 1024


def _pack_params(params: Any) -> Any:
    """A task's params for the wire: usually the two frames of ``dumps(params)`` as
    bytes, which Dask's comm sends as plain msgpack; large ones (or ones with
    out-of-band buffers) through Dask's serialization (``to_serialize``). Dask's
    path costs a serializer lookup, a header and size accounting per message, on
    both sides, for what is usually a dict of a few numbers."""
    from distributed.protocol import to_serialize

    from ..serialization import dumps

    frames = dumps(params, memmaps=False)
    if len(frames) == 2 and sum(memoryview(f).nbytes for f in frames) <= INLINE_PARAMS_BYTES:
        return [bytes(f) for f in frames]
    return to_serialize(params)



class DaskWorker:
    """One Dask worker as hpsearch's scheduler sees it: its threads are the slots."""

    def __init__(self, pool: DaskWorkers, search: _Search, address: str, slots: int, prefetch: int) -> None:
        self.name = f"dask-{pool.pool_id}:{address}"
        self.address = address
        self.slots = slots
        self.prefetch = prefetch
        self._pool = pool
        self._search = search

    def submit(self, task: Task) -> None:
        """Send the task from the client's event loop; never blocks.

        Usually called on that loop itself (the search handles each result there and
        dispatches the next task at once): the send is then scheduled directly,
        without waking the loop through its self-pipe (a syscall and one more loop
        pass per task). A batch of one."""
        self._send(self._pool._run_tasks, (task,))

    def submit_many(self, tasks: Sequence[Task]) -> None:
        """Send a batch of tasks in one call; the Dask worker runs them one by one, in
        order, on one of its threads, and the results come back together (``Results``)."""
        self._send(self._pool._run_tasks, tuple(tasks))

    def _send(self, run: Any, what: Any) -> None:
        pool = self._pool
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is pool._aio_loop:
            job = running.create_task(run(self._search, self, what))
            pool._jobs.add(job)  # the loop keeps only weak references to tasks
            job.add_done_callback(pool._jobs.discard)
        else:
            pool._loop.add_callback(run, self._search, self, what)

    def close(self) -> None:
        """Nothing to do: the pool owns the connections."""

    def __repr__(self) -> str:
        return f"DaskWorker({self.address!r}, slots={self.slots})"


@dataclass
class _Search:
    cid: str
    frames: list[Any]
    nbytes: int
    emit: Emit
    membership: Membership
    workers: dict[str, DaskWorker] = field(default_factory=dict)
    active: bool = True
    last_error: str | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)


class DaskWorkers:
    """Run hpsearch tasks on a ``dask.distributed`` cluster.

    Each Dask worker becomes an hpsearch worker with one slot per thread. The data
    (the evaluation context) reaches each Dask worker once and stays there, named by
    its content: a second search on the same data sends only params. Workers added to
    the cluster while a search runs get tasks at once; a worker that is removed or
    killed loses nothing (its tasks run elsewhere; the first result wins).

    Parameters
    ----------
    client_or_address : distributed.Client, a Dask cluster object, or str
        A connected client (left open on close), a cluster such as ``LocalCluster``,
        ``KubeCluster`` or ``SLURMCluster``, or a scheduler address such as
        ``"tcp://scheduler:8786"``.
    min_workers : int
        Dask workers that must hold the data before a search starts.
    connect_timeout : float
        Seconds to reach the scheduler; an unreachable address raises
        :class:`~hpsearch.errors.NoWorkersError` after this long, before any fit.
    join_timeout : float
        Seconds to wait for ``min_workers``; also how long a search may go on with no
        worker at all before it fails.
    prefetch : int
        Tasks sent to a worker beyond its threads, per thread (each thread finds the
        next task waiting when it finishes one, instead of a network round trip).
    max_cached_contexts : int
        Evaluation contexts each Dask worker process keeps for later searches.
    poll_interval : float
        Seconds between two looks at the scheduler's worker list.

    Attributes
    ----------
    stats : collections.Counter
        Client-side counters: ``contexts_sent``, ``context_bytes_sent``,
        ``tasks_sent``, ``results``, ``workers_lost``, and the joblib backend's
        ``calls``, ``buffers_sent``, ``buffer_bytes_sent``.

    Examples
    --------
    >>> from distributed import LocalCluster
    >>> from hpsearch import DaskWorkers, run_search
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
    ...                   dashboard_address=None) as cluster:
    ...     with DaskWorkers(cluster) as pool:
    ...         result = run_search(DecisionTreeClassifier(random_state=0),
    ...                             {"max_depth": [1, 3]}, X, y, workers=pool, progress=False)
    >>> result.best_params_
    {'max_depth': 3}
    """

    def __init__(
        self,
        client_or_address: Any,
        *,
        min_workers: int = 1,
        connect_timeout: float = 10.0,
        join_timeout: float = 60.0,
        prefetch: int = 1,
        max_cached_contexts: int = 2,
        poll_interval: float = 0.2,
    ) -> None:
        if not isinstance(client_or_address, str) and not (
            hasattr(client_or_address, "scheduler") or hasattr(client_or_address, "scheduler_address")
        ):
            raise InvalidParameterError(
                "DaskWorkers needs a distributed.Client, a Dask cluster object or a scheduler "
                f"address such as 'tcp://scheduler:8786'; got {client_or_address!r}"
            )
        for name, value, low in (("min_workers", min_workers, 0), ("prefetch", prefetch, 0),
                                 ("max_cached_contexts", max_cached_contexts, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidParameterError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, seconds in (("connect_timeout", connect_timeout), ("join_timeout", join_timeout),
                              ("poll_interval", poll_interval)):
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
                raise InvalidParameterError(f"{name} must be a positive number of seconds, got {seconds!r}")
        self.target = client_or_address
        self.min_workers = min_workers
        self.connect_timeout = float(connect_timeout)
        self.join_timeout = float(join_timeout)
        self.prefetch = prefetch
        self.max_cached_contexts = max_cached_contexts
        self.poll_interval = float(poll_interval)
        self.pool_id = next(_POOL_IDS)
        self.stats: collections.Counter[str] = collections.Counter()
        self._client: Any = None
        self._owns_client = False
        # joblib calls (event-loop thread only): the workers and what each holds
        self._listing: dict[str, int] = {}
        self._listed_at = float("-inf")
        self._inflight: collections.Counter[str] = collections.Counter()
        self._held: dict[str, set[str]] = {}
        self._pending: dict[str, dict[str, asyncio.Future]] = {}
        self._implicit = False
        self._search: _Search | None = None
        self._aio_loop: Any = None  # the client's asyncio loop, once open
        self._jobs: set[asyncio.Task[Any]] = set()  # tasks sent from the loop itself

    # -- lifecycle --------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` in use (None until opened)."""
        return self._client

    @property
    def _loop(self) -> Any:
        return self._client.loop

    def open(self) -> DaskWorkers:
        """Connect to the scheduler and install the worker plugin (idempotent)."""
        if self._client is not None:
            return self
        distributed = require_distributed()
        target = self.target
        if isinstance(target, distributed.Client):
            client, owns = target, False
        else:
            where = target if isinstance(target, str) else getattr(target, "scheduler_address", target)
            try:
                client = distributed.Client(target, timeout=self.connect_timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise NoWorkersError(
                    f"cannot reach the Dask scheduler at {where!r} within connect_timeout="
                    f"{self.connect_timeout:g} s ({type(exc).__name__}: {exc}). Check that the scheduler "
                    "runs and that this machine can reach it (a scheduler started with `dask scheduler` "
                    "listens on tcp://HOST:8786); raise connect_timeout for a slow network"
                ) from exc
            owns = True
        try:
            client.register_plugin(HPSearchPlugin(self.max_cached_contexts), name=PLUGIN_NAME)
        except BaseException:
            if owns:
                client.close()
            raise
        self._client, self._owns_client = client, owns
        self._aio_loop = getattr(client.loop, "asyncio_loop", None)
        return self

    def close(self) -> None:
        """End any search, and close the client if this pool created it."""
        self._end_search()
        self._held.clear()
        self._listed_at = float("-inf")
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            client.close()

    def __enter__(self) -> DaskWorkers:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self, context: EvaluationContext, emit: Emit) -> None:
        """Ship the context to the cluster's workers; wait for ``min_workers`` of them."""
        if self._client is None:
            self.open()
            self._implicit = True
        try:
            self._start_search(context, emit)
        except BaseException:
            self.stop()
            raise

    def _start_search(self, context: EvaluationContext, emit: Emit) -> None:
        from ..serialization import content_id, dumps

        frames = dumps(context)
        cid = content_id(frames)
        # numpy views of the frames: Dask sends arrays as out-of-band frames, uncopied.
        arrays = [np.frombuffer(frame, dtype=np.uint8) for frame in frames]
        search = _Search(cid, arrays, sum(a.nbytes for a in arrays), emit,
                         Membership(self.join_timeout, time.monotonic()))
        self._end_search()
        self._search = search
        self._loop.add_callback(self._watch, search)
        deadline = time.monotonic() + self.join_timeout
        with search.changed:
            while search.membership.n_ready < self.min_workers and search.active:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                search.changed.wait(min(left, 1.0))
            ready = search.membership.n_ready
        if ready < self.min_workers:
            listed = len(search.membership.state)
            why = f"; the last worker error was:\n{search.last_error}" if search.last_error else ""
            raise NoWorkersError(
                f"only {ready} of min_workers={self.min_workers} Dask worker(s) were ready within "
                f"join_timeout={self.join_timeout:g} s (the scheduler lists {listed}){why}. Start "
                "workers (`dask worker SCHEDULER_ADDRESS`), scale the cluster, or raise join_timeout"
            )

    def stop(self) -> None:
        """End the search's use of the pool (closing it if the search opened it)."""
        self._end_search()
        if self._implicit:
            self._implicit = False
            self.close()

    def _end_search(self) -> None:
        search, self._search = self._search, None
        if search is not None:
            with search.changed:
                search.active = False
                search.changed.notify_all()

    def __repr__(self) -> str:
        return f"DaskWorkers({self.target!r})"

    # -- event-loop side ------------------------------------------------------------

    def _rpc(self, address: str) -> Any:
        return self._client.rpc(address)

    async def _watch(self, search: _Search) -> None:
        """Follow the scheduler's worker list while the search runs."""
        while search.active and self._client is not None:
            try:
                info = await self._client.scheduler.identity(n_workers=-1)
            except Exception as exc:  # the scheduler is unreachable: nobody can join
                logger.warning("cannot list the Dask workers: %r", exc)
                self._act(search, search.membership.tick(time.monotonic()))
            else:
                workers = {
                    address: int(w.get("nthreads", 0))
                    for address, w in info.get("workers", {}).items()
                    if w.get("status", "running") in _USABLE
                }
                self._act(search, search.membership.listed(workers, time.monotonic()))
            await asyncio.sleep(self.poll_interval)

    def _act(self, search: _Search, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Join):
                self._loop.add_callback(self._join, search, action.address, action.nthreads)
            elif isinstance(action, Lose):
                worker = search.workers.pop(action.address, None)
                if worker is not None and search.active:
                    self.stats["workers_lost"] += 1
                    search.emit(WorkerLost(worker.name, action.reason))
            elif isinstance(action, Starve) and search.active:
                search.emit(PoolFailed(NoWorkersError(
                    f"no Dask worker was ready for {action.waited:.0f} s (join_timeout="
                    f"{self.join_timeout:g} s): the cluster lost all its workers"
                )))

    async def _join(self, search: _Search, address: str, nthreads: int) -> None:
        """Make sure the worker holds the context, then announce it to the search."""
        try:
            await self._ensure_context(search, address)
        except OSError as exc:
            self._act(search, search.membership.failed(address, repr(exc), time.monotonic()))
            return
        except Exception as exc:
            search.last_error = str(exc)
            logger.error("Dask worker %s cannot take hpsearch tasks: %s", address, exc)
            self._act(search, search.membership.failed(address, str(exc), time.monotonic()))
            return
        if not search.active or not search.membership.ready(address, time.monotonic()):
            return
        worker = DaskWorker(self, search, address, nthreads, self.prefetch * nthreads)
        search.workers[address] = worker
        with search.changed:
            search.changed.notify_all()
        logger.info("Dask worker %s joined with %d thread(s)", address, nthreads)
        search.emit(WorkerJoined(worker))

    async def _ensure_context(self, search: _Search, address: str) -> None:
        from distributed.protocol import to_serialize

        rpc = self._rpc(address)
        reply = await self._handler_call(address, rpc.hpsearch_context, cid=search.cid)
        if reply["status"] == "missing":
            reply = await rpc.hpsearch_context(cid=search.cid, frames=to_serialize(search.frames))
            self.stats["contexts_sent"] += 1
            self.stats["context_bytes_sent"] += search.nbytes
        if reply["status"] != "ok":
            raise RuntimeError(f"Dask worker {address} cannot load the search's data:\n{reply.get('error')}")

    async def _ask(
        self, search: _Search, worker: DaskWorker, handler: str, pack: Callable[[], dict[str, Any]]
    ) -> tuple[bool, Any]:
        """Call a worker's hpsearch ``handler`` for this search with the arguments ``pack``
        makes (once), sending the context again once if the worker evicted it.
        ``(False, None)`` when the worker is unreachable (the search is told it failed);
        an error while packing or calling is a ``status: error`` reply."""
        rpc = self._rpc(worker.address)
        try:
            kwargs = pack()
            reply = await getattr(rpc, handler)(cid=search.cid, **kwargs)
            if reply is not None and reply["status"] == "missing":  # evicted by another search
                await self._ensure_context(search, worker.address)
                reply = await getattr(rpc, handler)(cid=search.cid, **kwargs)
        except OSError as exc:
            self._act(search, search.membership.failed(worker.address, repr(exc), time.monotonic()))
            return False, None
        except Exception:
            reply = {"status": "error", "error": clip_text(traceback.format_exc())}
        return True, reply

    async def _run_tasks(self, search: _Search, worker: DaskWorker, tasks: tuple[Task, ...]) -> None:
        """One call to the worker's ``hpsearch_tasks`` with a task or a batch; each result
        (or failure) reported, a batch's as one ``Results`` event."""
        if search.workers.get(worker.address) is not worker:
            return  # lost meanwhile: the search requeued the tasks
        self.stats["tasks_sent"] += len(tasks)
        if len(tasks) > 1:
            self.stats["batches_sent"] += 1
        sent, reply = await self._ask(
            search, worker, "hpsearch_tasks", lambda: {"tasks": [[_pack_params(t.params), t.fold] for t in tasks]})
        if not sent or not search.active:
            return
        events: list[Any] = []
        if reply is None or reply["status"] != "ok" or len(reply.get("results", ())) != len(tasks):
            error = "no hpsearch handler on the worker" if reply is None else reply.get("error", repr(reply))
            events = [TaskFailed(worker.name, t.task_id, t.attempt, str(error)) for t in tasks]
        else:
            for task, (status, body) in zip(tasks, reply["results"]):
                if status != "ok":
                    events.append(TaskFailed(worker.name, task.task_id, task.attempt, str(body)))
                    continue
                try:
                    result = FoldResult.from_message(msgpack.unpackb(body, raw=False, strict_map_key=True))
                except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
                    events.append(TaskFailed(worker.name, task.task_id, task.attempt, f"malformed result: {exc}"))
                    continue
                self.stats["results"] += 1
                events.append(TaskFinished(worker.name, task.task_id, task.attempt, result))
        search.emit(events[0] if len(events) == 1 else Results(tuple(events)))

    # -- arbitrary calls (the joblib backend) -------------------------------------------

    def total_threads(self, timeout: float | None = None) -> int:
        """Threads of the cluster's usable workers, waiting up to ``timeout`` (default
        ``join_timeout``) for a first worker."""
        if self._client is None:
            self.open()

        async def count() -> int:
            return sum((await self._workers(timeout)).values())

        return self._client.sync(count)

    def submit_call(self, func: Any) -> concurrent.futures.Future:
        """Run ``func()`` on the least busy Dask worker; its large buffers travel once.

        ``func`` is serialized here with :func:`hpsearch.serialization.dumps`; every
        out-of-band buffer (a large array) is named by its content and sent only to
        workers that do not hold it yet. A worker lost during the call is replaced by
        another, up to ``MAX_CALL_ATTEMPTS`` workers.
        """
        from ..serialization import dumps

        if self._client is None:
            raise RuntimeError("open the pool (with pool: ...) before submitting calls")
        frames = dumps(func)
        head = [bytes(frames[0]), bytes(frames[1])]
        ids = [buffer_id(frame) for frame in frames[2:]]
        arrays = {bid: np.frombuffer(frame, dtype=np.uint8) for bid, frame in zip(ids, frames[2:])}
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._loop.add_callback(self._call, head, ids, arrays, future)
        return future

    async def _workers(self, timeout: float | None = None) -> dict[str, int]:
        """Usable workers (address -> threads), listed at most ``poll_interval`` ago."""
        deadline = time.monotonic() + (self.join_timeout if timeout is None else timeout)
        while True:
            if time.monotonic() - self._listed_at > self.poll_interval:
                info = await self._client.scheduler.identity(n_workers=-1)
                self._listing = {
                    address: int(w.get("nthreads", 0))
                    for address, w in info.get("workers", {}).items()
                    if w.get("status", "running") in _USABLE and w.get("nthreads", 0) > 0
                }
                self._listed_at = time.monotonic()
                for gone in set(self._held) - set(self._listing):
                    del self._held[gone]
            if self._listing or time.monotonic() >= deadline:
                return self._listing
            await asyncio.sleep(self.poll_interval)

    async def _call(self, head: list[bytes], ids: list[str], arrays: dict[str, Any],
                    future: concurrent.futures.Future) -> None:
        failures: list[str] = []
        try:
            while len(failures) < MAX_CALL_ATTEMPTS:
                workers = {a: n for a, n in (await self._workers()).items() if a not in failures}
                if not workers:
                    raise NoWorkersError(
                        f"no Dask worker to run the call within join_timeout={self.join_timeout:g} s"
                        + (f" (lost: {failures})" if failures else "")
                    )
                address = min(workers, key=lambda a: self._inflight[a] / workers[a])
                held = self._held.setdefault(address, set())
                self._inflight[address] += 1
                try:
                    reply = await self._send_call(address, head, ids, arrays, held)
                except OSError as exc:
                    logger.warning("Dask worker %s lost during a call (%r); trying another", address, exc)
                    self._held.pop(address, None)
                    failures.append(address)
                    continue
                finally:
                    self._inflight[address] -= 1
                if reply["status"] != "ok":
                    raise RuntimeError(f"Dask worker {address} could not run the call:\n{reply.get('error')}")
                self.stats["calls"] += 1
                future.set_result(reply["result"])
                return
            raise NoWorkersError(f"the call was lost with {MAX_CALL_ATTEMPTS} Dask workers: {failures}")
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _send_call(self, address: str, head: list[bytes], ids: list[str],
                         arrays: dict[str, Any], held: set[str]) -> dict[str, Any]:
        rpc = self._rpc(address)
        for _ in range(MAX_CALL_ATTEMPTS):
            await self._ensure_buffers(address, ids, arrays, held)
            reply = await self._handler_call(address, rpc.hpsearch_call, head=head, ids=ids)
            if reply["status"] != "missing":
                return reply
            held.difference_update(reply["ids"])  # evicted from the worker's cache: send again
        raise RuntimeError(
            f"Dask worker {address} evicted the call's buffers {MAX_CALL_ATTEMPTS} times: its buffer "
            "cache is smaller than one call's data (HPSearchPlugin max_buffer_bytes)"
        )

    async def _ensure_buffers(self, address: str, ids: list[str], arrays: dict[str, Any],
                              held: set[str]) -> None:
        """Send the worker the buffers it does not hold; a buffer already on its way is
        awaited rather than sent twice (calls to one worker overlap)."""
        from distributed.protocol import to_serialize

        pending = self._pending.setdefault(address, {})
        while waits := [pending[bid] for bid in set(ids) if bid in pending]:
            await asyncio.gather(*waits)
        missing = [bid for bid in dict.fromkeys(ids) if bid not in held]
        if not missing:
            return
        loop = asyncio.get_running_loop()
        for bid in missing:
            pending[bid] = loop.create_future()
        try:
            send = {bid: arrays[bid] for bid in missing}
            await self._handler_call(address, self._rpc(address).hpsearch_buffers, buffers=to_serialize(send))
            held.update(missing)
            self.stats["buffers_sent"] += len(send)
            self.stats["buffer_bytes_sent"] += sum(a.nbytes for a in send.values())
        finally:
            for bid in missing:
                pending.pop(bid).set_result(None)

    async def _handler_call(self, address: str, method: Any, **msg: Any) -> dict[str, Any]:
        """Call an hpsearch handler, waiting for a just-started worker to install them."""
        deadline = time.monotonic() + _PLUGIN_WAIT
        while (reply := await method(**msg)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the hpsearch plugin is not installed on Dask worker {address} after "
                    f"{_PLUGIN_WAIT:g} s: is hpsearch importable there?"
                )
            await asyncio.sleep(0.05)
        return reply

    # -- inspection -----------------------------------------------------------------

    def worker_stats(self, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
        """Counters kept by each Dask worker process (``contexts_loaded``, ``tasks``,
        ``calls``, ``buffers_received``) and the content ids it holds."""
        if self._client is None:
            raise RuntimeError("the pool is not open")

        async def gather() -> dict[str, dict[str, Any]]:
            info = await self._client.scheduler.identity(n_workers=-1)
            out = {}
            for address in info.get("workers", {}):
                try:
                    reply = await self._rpc(address).hpsearch_stats()
                except OSError:
                    continue
                if reply is not None:
                    out[address] = reply
            return out

        return self._client.sync(gather, callback_timeout=timeout)
