"""The master side of the ZeroMQ protocol: :class:`RemoteWorkers`.

The pool binds a ROUTER socket and runs a :class:`~hpsearch.workers.router.RouterLoop`
on its own I/O thread, which alone touches the socket; the protocol's rules live in
the sans-I/O :class:`~hpsearch.workers.peers.PeerTable`. This module is the part the
caller's thread runs: opening and closing, and starting a search (serializing the
context, computing its content id while the first chunks travel, waiting for
``min_workers``). With ``shared_memory``, the context's large buffers are also put in
a shared-memory segment (:mod:`hpsearch.workers.shared`) that workers on this machine
map instead of receiving them.

The master never unpickles a search's results: worker messages are msgpack headers
only, and results are rebuilt with ``FoldResult.from_message``. The one exception is
opt-in: a pool that trusts its workers (``trust_workers=True``; ``LocalProcesses``,
its own children) runs joblib calls (:meth:`RemoteWorkers.submit_call`), whose
results are pickles; each is taken only from the session the call was sent to.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import itertools
import logging
import pickle
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import zmq

from ..errors import InvalidParameterError, NoWorkersError
from ..evaluation import EvaluationContext
from .base import Emit, Task
from .calls import Call, CallDone
from .peers import PeerTable
from .protocol import WORKER_TYPES, Codec, curve_keys, local_versions, make_token, parse_token, with_server_key
from .router import RouterLoop
from .shared import SegmentCache, host_id, shared_frames
from .transfer import Offer, hash_frames

logger = logging.getLogger(__name__)

__all__ = ["RemoteWorker", "RemoteWorkers"]

#: A search waiting for workers says so at WARNING after this many seconds, and again
#: every ``WAITING_WARNING_EVERY`` seconds.
WAITING_WARNING_AFTER = 5.0
WAITING_WARNING_EVERY = 30.0

class RemoteWorker:
    """One connected ``hpsearch-worker`` process, as the scheduler sees it."""

    prefetch = 1

    def __init__(self, pool: RemoteWorkers, session: str, name: str, slots: int) -> None:
        self._pool = pool
        self.session = session
        self.name = name
        self.slots = slots

    def submit(self, task: Task) -> None:
        """Send the task (on the I/O thread), or queue it for the I/O thread; never blocks."""
        loop = self._pool._loop
        if loop is not None:
            loop.submit(self.session, task)

    def submit_many(self, tasks: Sequence[Task]) -> None:
        """Send the tasks as one TASKS message (protocol 1.4); the worker runs them in order."""
        loop = self._pool._loop
        if loop is not None:
            loop.submit_many(self.session, tasks)

    def close(self) -> None:
        """Nothing to do: the pool owns the connection."""

    def abandon(self, task: Task) -> bool:
        """Give up ``task`` (past its time limit): the pool stops the process if it owns
        it; a remote machine's task runs on, its slot busy until it ends. True when
        the slot is free at once."""
        return self._pool._abandon(self.session, task)

    def __repr__(self) -> str:
        return f"RemoteWorker({self.name!r}, slots={self.slots})"


def _is_loopback(address: str) -> bool:
    if address.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _WorkerKey:
    """ZAP credentials check: only the client key derived from the token."""

    def __init__(self, public: bytes) -> None:
        self.key = public

    def callback(self, domain: str, key: bytes) -> bool:  # key: Z85
        import hmac

        return hmac.compare_digest(key, self.key)


class RemoteWorkers:
    """Worker processes on other machines, joining over ZeroMQ.

    The pool binds a ROUTER socket and waits for ``hpsearch-worker`` processes to
    connect with the join token; each one becomes a worker of the search, with as
    many slots as it announced. Workers may join and leave while a search runs; a
    worker that dies loses nothing (its tasks run elsewhere).

    Parameters
    ----------
    address : str
        Where to listen, e.g. ``"tcp://0.0.0.0:5555"``; a port of ``*`` or ``0``
        picks a free one.
    token : str, optional
        The join token (``hps1:...``); a fresh one is generated when None. There is
        no unauthenticated mode: every message is signed with the token's secret, so
        an empty token is refused (explicitly so on a non-loopback address).
    min_workers : int
        Workers that must have joined (and loaded the data) before a search starts.
    join_timeout : float
        Seconds to wait for ``min_workers``; also how long a search may run with no
        worker at all before it fails with :class:`~hpsearch.errors.NoWorkersError`.
    heartbeat : float
        Seconds between heartbeats on an idle connection.
    heartbeat_timeout : float
        A worker silent this long is lost; its tasks go back to the queue.
    max_message_size : int
        Inbound messages larger than this are refused by libzmq, which drops the
        connection. Workers only send small messages (no payload; headers up to
        1 MiB; error texts clipped to 32 KiB), so a larger one is not a worker's.
    encrypt : bool, optional
        Encrypt all traffic with CurveZMQ. Default: on unless ``address`` is a
        loopback (or ipc) address. The master's public key, derived from the token,
        is appended to the join token (``hps1:SECRET.KEY``), so joining is still the
        one command of :attr:`join_command`; workers encrypt when their token carries
        a key. Without encryption messages are signed (integrity) but readable on
        the network.
    shared_memory : bool
        Let workers on this machine (same boot and process namespace, same user) map
        the context's large arrays (1 MB and more) from one shared, read-only copy
        instead of each receiving them; a worker that cannot map it receives the
        bytes. Off by default for remote workers; :class:`~hpsearch.LocalProcesses`
        turns it on.
    trust_workers : bool
        Let the joblib backend (``parallel_config(backend="hpsearch", workers=pool)``)
        run on these workers. A joblib call returns Python objects, which this process
        unpickles: anyone holding the join token could then run code on this machine.
        Default False: workers are trusted with scores only, and the master unpickles
        nothing they send.

    Attributes
    ----------
    join_command : str
        The exact command that starts a worker for this pool.
    stats : collections.Counter
        Counters: ``contexts_sent``, ``tasks_sent``, ``results``, ``dropped``, ...

    Examples
    --------
    >>> from hpsearch import RemoteWorkers, run_search
    >>> with RemoteWorkers("tcp://0.0.0.0:5555", min_workers=2) as pool:  # doctest: +SKIP
    ...     print(pool.join_command)  # run this on the worker machines
    ...     first = run_search(est, space, X, y, workers=pool)
    ...     second = run_search(est, other_space, X, y, workers=pool)  # data not sent again
    """

    _exit_on_close = False  # remote workers stay up and wait for the next master

    def __init__(
        self,
        address: str,
        token: str | None = None,
        min_workers: int = 1,
        join_timeout: float = 300.0,
        *,
        heartbeat: float = 1.0,
        heartbeat_timeout: float = 30.0,
        max_message_size: int = 2 * 1024 * 1024,
        encrypt: bool | None = None,
        shared_memory: bool = False,
        trust_workers: bool = False,
    ) -> None:
        if not isinstance(address, str) or "://" not in address:
            raise InvalidParameterError(f"address must be a ZeroMQ endpoint such as 'tcp://0.0.0.0:5555', got {address!r}")
        if token is None:
            token = make_token()
        elif not token:
            where = "a non-loopback address" if not _is_loopback(address) else "any address"
            raise InvalidParameterError(
                f"binding {address!r} without a token is refused: every message must be signed "
                f"on {where}. Pass token=None to generate one"
            )
        try:
            secret = parse_token(token)
        except ValueError as exc:
            raise InvalidParameterError(f"token: {exc}") from None
        if min_workers < 0:
            raise InvalidParameterError(f"min_workers must be >= 0, got {min_workers!r}")
        self.encrypt = not _is_loopback(address) if encrypt is None else bool(encrypt)
        self._curve: tuple[bytes, bytes] | None = None
        if self.encrypt:
            if not zmq.has("curve"):
                raise InvalidParameterError(
                    "encrypt=True needs libzmq built with CURVE (libsodium); install pyzmq's wheels, "
                    "or pass encrypt=False and use a private network or an SSH tunnel")
            self._curve = curve_keys(secret)
        self.address = address
        #: The join token workers need (it carries the public key when encrypting).
        self.token = with_server_key(token, self._curve[0] if self._curve else None)
        self.min_workers = int(min_workers)
        self.join_timeout = float(join_timeout)
        self.heartbeat = float(heartbeat)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.max_message_size = int(max_message_size)
        self.trust_workers = bool(trust_workers)
        self._call_ids = itertools.count(1)
        self.endpoint: str | None = None
        self._table = PeerTable(local_versions(), self._make_worker, heartbeat=self.heartbeat,
                                heartbeat_timeout=self.heartbeat_timeout, min_workers=self.min_workers,
                                join_timeout=self.join_timeout,
                                host_id=host_id() if shared_memory else None)
        self.shared_memory = bool(shared_memory)
        # The segments of the latest contexts, kept while the pool is open: a later
        # search on the same data (or a replacement worker) maps the same one.
        self._segments = SegmentCache()
        self.stats = self._table.stats
        self._secret = secret
        self._cond = threading.Condition()  # guards _joined and _failure
        self._joined = 0
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: RouterLoop | None = None
        self._ctx: zmq.Context | None = None
        self._implicit = False
        self._auth: Any = None  # the ZAP handler's thread when encrypting
        # Random start: traffic recorded from another master with the same token names
        # search ids this master never uses, so it cannot be replayed into its searches.
        self._search_counter = secrets.randbits(48)

    def _make_worker(self, session: str, name: str, slots: int) -> RemoteWorker:
        return RemoteWorker(self, session, name, slots)

    # -- lifecycle (caller's thread) --------------------------------------------------------

    @property
    def join_command(self) -> str:
        """The command line that starts a worker for this pool."""
        endpoint = self.endpoint or self.address
        parts = urlsplit(endpoint)
        if parts.hostname in ("0.0.0.0", "::", "*"):
            endpoint = endpoint.replace(parts.hostname, socket.getfqdn(), 1)
        return f"hpsearch-worker --connect {endpoint} --token {self.token}"

    def open(self) -> RemoteWorkers:
        """Bind the socket and start the I/O thread (idempotent)."""
        if self._thread is not None:
            return self
        self._failure = None
        self._ctx = zmq.Context()
        router = self._ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.router_mandatory = 1
        router.maxmsgsize = self.max_message_size
        router.sndhwm = 100_000
        router.rcvhwm = 100_000
        router.tcp_keepalive = 1
        if self._curve is not None:
            router.curve_server = True
            router.curve_publickey, router.curve_secretkey = self._curve
            # ZAP: only the token's worker key completes a handshake, so a peer without
            # the token cannot make libzmq buffer a single frame (a multipart message
            # is held whole until its last frame, whatever MAXMSGSIZE says per frame).
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve_callback("*", _WorkerKey(curve_keys(self._secret, "worker")[0]))
        try:
            router.bind(self.address)
        except zmq.ZMQError as exc:
            router.close(linger=0)
            self._stop_auth()
            self._ctx.term()
            self._ctx = None
            raise InvalidParameterError(f"cannot listen on {self.address!r}: {exc}") from None
        self.endpoint = router.get_string(zmq.LAST_ENDPOINT)
        self._table.hint = f" Start workers with:\n  {self.join_command}"
        self._loop = RouterLoop(router, self._table, Codec(self._secret, WORKER_TYPES), heartbeat=self.heartbeat,
                                max_message_size=self.max_message_size, exit_on_close=self._exit_on_close,
                                on_joined=self._on_joined, on_failure=self._on_failure, dead_pids=self._dead_pids,
                                housekeeping=self._housekeeping, on_call_done=self._settle_call)
        self._thread = threading.Thread(target=self._loop.run, name="hpsearch-remote-io", daemon=True)
        self._thread.start()
        logger.info("listening on %s; start workers with:\n  %s", self.endpoint, self.join_command)
        return self

    def close(self) -> None:
        """Say goodbye to the workers, stop the I/O thread and close the socket."""
        if self._thread is None:
            return
        self._command("close")
        self._thread.join(10.0)
        if self._thread.is_alive():  # its socket and pipe are still in use: leave them
            logger.error("the remote-workers I/O thread did not stop within 10 s")
            self._thread = None
            return
        self._thread = None
        self._loop = None
        self._segments.close()  # workers' mappings stay valid until they drop them
        self._stop_auth()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def __enter__(self) -> RemoteWorkers:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self, context: EvaluationContext, emit: Emit) -> None:
        """Make the context available and wait for ``min_workers`` to be ready."""
        if self._thread is None:
            self.open()
            self._implicit = True
        try:
            self._start_search(context, emit)
        except BaseException:
            if self._implicit:  # opened for this search: nobody else will close it
                self._implicit = False
                self.close()
            raise

    def _start_search(self, context: EvaluationContext, emit: Emit) -> None:
        from ..serialization import dumps

        frames = dumps(context)
        self._search_counter += 1
        with self._cond:
            self._joined = 0
        if self._table.host_id is not None and shared_frames(frames):
            self._share(frames, emit)
            return self._wait_ready()
        offer = Offer.from_frames(self._search_counter, frames)
        # Workers holding no context at all cannot hold this one: the I/O thread starts
        # sending them the data at once, while this thread computes its content id
        # (one core; the other is the network's). The last chunk waits for the id.
        self._command("search", offer, emit)
        try:
            self._command("sealed", offer.search, hash_frames(frames))
        except BaseException:
            self._end_search()
            raise
        self._wait_ready()

    def _share(self, frames: list[Any], emit: Emit) -> None:
        """Offer the context with its large buffers in shared memory (if it can be made).

        The segment is kept by content id, so the id comes first (no transfer starts
        before it: workers on this machine need the segment's description, and the
        few bytes they receive are not worth overlapping with the hash).
        """
        context_id = hash_frames(frames)
        segment = self._segments.get(context_id, frames)
        offer = Offer.from_frames(self._search_counter, frames, segment=segment)
        offer.context_id = context_id
        self._command("search", offer, emit)

    def _wait_ready(self) -> None:
        """Wait until ``min_workers`` have the context (NoWorkersError past ``join_timeout``)."""
        start = time.monotonic()
        deadline = start + self.join_timeout
        next_warning = start + WAITING_WARNING_AFTER
        with self._cond:
            while not self._ready_to_start(self._joined) and self._failure is None:
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    break
                if now >= next_warning:
                    logger.warning(
                        "waiting for workers: %d of min_workers=%d ready after %.0f s (gives up after "
                        "join_timeout=%g s). %s", self._joined, self.min_workers, now - start,
                        self.join_timeout, self._join_advice())
                    next_warning = now + WAITING_WARNING_EVERY
                self._cond.wait(max(0.01, min(left, 1.0, next_warning - now)))
            if self._failure is not None:
                raise NoWorkersError(f"the remote-workers I/O thread failed: {self._failure!r}")
            joined = self._joined
            ready = self._ready_to_start(joined)
        if not ready:
            self._end_search()
            raise NoWorkersError(
                f"only {joined} of min_workers={self.min_workers} worker(s) joined {self.endpoint} "
                f"within join_timeout={self.join_timeout:g} s{self._no_workers_hint()}. "
                f"Start workers with:\n  {self.join_command}"
            )

    def _ready_to_start(self, joined: int) -> bool:
        """Whether a search with ``joined`` workers ready may start."""
        return joined >= self.min_workers

    def _join_advice(self) -> str:
        return f"Start workers with:\n  {self.join_command}"

    def _abandon(self, session: str, task: Task) -> bool:
        """A remote machine's fit cannot be stopped from here: its slot stays busy."""
        return False

    def _housekeeping(self, now: float) -> None:
        """Run on the I/O thread before each liveness check (see :class:`RouterLoop`)."""

    def _no_workers_hint(self) -> str:
        return ""

    def stop(self) -> None:
        """End the search's use of the pool (closing it if the search opened it)."""
        self._end_search()
        if self._implicit:
            self._implicit = False
            self.close()

    def _end_search(self) -> None:
        if self._thread is None:
            return
        done = threading.Event()
        self._command("end", done)
        done.wait(10.0)

    def _command(self, *command: Any) -> None:
        if self._loop is not None:
            self._loop.command(*command)

    def _on_joined(self) -> None:
        with self._cond:
            self._joined += 1
            self._cond.notify_all()

    def _on_failure(self, exc: BaseException) -> None:
        with self._cond:
            self._failure = exc
            self._cond.notify_all()

    # -- calls (the joblib backend) --------------------------------------------------------

    def submit_call(self, func: Any) -> concurrent.futures.Future:
        """Run ``func()`` on a worker slot; a future of its return value.

        ``func`` is serialized here (:func:`hpsearch.serialization.dumps`); its large
        buffers (arrays of 64 KiB or more) are named by their content and reach each
        worker once, however many calls carry them. A worker lost during the call is
        replaced by another (at most 3 in all). Needs an open pool that trusts its
        workers (``trust_workers=True``; always so for ``LocalProcesses``).
        """
        from ..serialization import dumps

        if not self.trust_workers:
            raise InvalidParameterError(
                f"{self!r} does not trust its workers with calls: a call's result is a pickle this "
                "process would unpickle, so anyone holding the join token could run code here. If every "
                "worker is yours, create the pool with RemoteWorkers(..., trust_workers=True)"
            )
        if self._loop is None:
            raise RuntimeError("open the pool (with pool: ...) before submitting calls")
        call = Call.from_frames(next(self._call_ids), dumps(func))
        self._command("call", call)
        return call.future

    def total_slots(self, timeout: float | None = None) -> int:
        """Slots of the connected workers, waiting up to ``timeout`` s (default
        ``join_timeout``) for ``min_workers`` (at least one) to connect."""
        if self._thread is None:
            raise RuntimeError("open the pool (with pool: ...) first")
        wait = self.join_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while len(peers := list(self._table.peers.values())) < max(1, self.min_workers):
            if time.monotonic() >= deadline:
                raise NoWorkersError(
                    f"{len(peers)} of min_workers={max(1, self.min_workers)} worker(s) joined {self.endpoint} "
                    f"within {wait:g} s to run joblib calls. Start workers with:\n  {self.join_command}"
                )
            time.sleep(0.05)
        return sum(peer.slots for peer in peers)

    @staticmethod
    def _settle_call(done: CallDone) -> None:
        """On the I/O thread: the call's future gets its unpickled result, or an error."""
        future = done.call.future
        if future.done():
            return
        if done.failure is not None:
            future.set_exception(RuntimeError(f"the worker could not run the call:\n{done.failure}"))
            return
        try:
            value = pickle.loads(done.data)  # type: ignore[arg-type]  # data is set without failure
        except Exception as exc:
            future.set_exception(RuntimeError(f"the call's result cannot be unpickled here: {exc!r}"))
            return
        future.set_result(value)

    @property
    def n_workers(self) -> int:
        """Workers connected now."""
        return len(self._table.peers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint or self.address!r}, min_workers={self.min_workers})"

    def _dead_pids(self) -> set[int]:
        """Pids known to have exited (LocalProcesses knows its children)."""
        return set()
