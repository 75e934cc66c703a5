"""The master side of the ZeroMQ protocol: :class:`RemoteWorkers`.

One I/O thread owns the ROUTER socket, and no other thread touches it. The scheduler
handles each result on this thread, so the next task usually goes out in the same pass;
``RemoteWorker.submit`` from any other thread puts a command on a queue and wakes the
I/O thread through a pipe. The I/O thread authenticates every inbound message before
decoding it, drops and logs anything wrong (never raising), ships the evaluation
context to each worker once (chunked, credit-based, content-addressed), sends tasks,
turns RESULT messages into scheduler events, and declares silent workers lost.

The master never unpickles anything a worker sends: worker messages are msgpack
headers only, and results are rebuilt with ``FoldResult.from_message``.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import os
import queue
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import zmq

from ..errors import InvalidParameterError, NoWorkersError, ProtocolError
from ..evaluation import EvaluationContext, FoldResult
from .base import Emit, PoolFailed, Task, TaskFailed, TaskFinished, WorkerJoined, WorkerLost
from .protocol import WORKER_TYPES, Codec, Message, local_versions, make_token, parse_token, version_mismatch

logger = logging.getLogger(__name__)

__all__ = ["RemoteWorker", "RemoteWorkers"]

#: Context chunks hold at most this many bytes: frames are cut into pieces (zero-copy
#: views) and small frames grouped. Below glibc's largest mmap threshold (32 MiB), so a
#: worker's receive buffers are recycled heap memory rather than fresh pages each time.
CHUNK_BYTES = 8 * 1024 * 1024
#: Serialized params up to this size (and without out-of-band buffers) ride in the
#: TASK header as ``params: [header, pickle]`` instead of two payload frames.
INLINE_PARAMS_BYTES = 64 * 1024
#: Acknowledgements held for a worker before they go out on their own.
MAX_ACKS = 256
#: Frames of a worker message: the envelope alone (workers never send payload frames,
#: so nothing a worker sends could ever reach a deserializer other than msgpack).
INBOUND_FRAMES = 1
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
        pool = self._pool
        if threading.get_ident() == pool._io_ident:
            # The scheduler handles a result on the thread that received it, and so
            # dispatches the next task from here: it goes out in the same pass.
            pool._send_task(self.session, task)
        else:
            pool._command(("task", self.session, task))

    def close(self) -> None:
        """Nothing to do: the pool owns the connection."""

    def abandon(self, task: Task) -> bool:
        """Give up ``task`` (past its time limit): the pool stops the process if it owns
        it; a remote machine's task runs on, its slot busy until it ends. True when
        the slot is free at once."""
        return self._pool._abandon(self.session, task)

    def __repr__(self) -> str:
        return f"RemoteWorker({self.name!r}, slots={self.slots})"


@dataclass
class _Peer:
    routing_id: bytes
    session: str
    worker_id: str
    name: str
    slots: int
    pid: int
    host: str
    worker: RemoteWorker
    last_recv: float
    last_send: float = 0.0
    seq_in: int = 0
    outbox: collections.deque = field(default_factory=collections.deque)
    contexts: set[str] = field(default_factory=set)
    state: str = "idle"  # for the current search: idle, waiting, asked, sending, ready, failed
    chunk_next: int = 0
    credit: int = 0
    inflight: dict[int, int] = field(default_factory=dict)
    acks: list[list[int]] = field(default_factory=list)  # results recorded, not yet acknowledged


@dataclass
class _Search:
    id: int
    context_id: str | None  # None while the master is still hashing the context
    chunks: list[list[memoryview]]
    sizes: list[int]
    nbytes: int
    emit: Emit
    joined: int = 0
    no_workers_since: float | None = None


def _chunks(frames: list[Any], limit: int | None = None) -> list[list[memoryview]]:
    """The frames' bytes, in order, as chunks of at most ``limit`` bytes (no copy).

    A worker writes the pieces one after another into one block and cuts it back
    into frames with the ``sizes`` of the first chunk, so pieces may split frames
    (and empty frames need no piece at all).
    """
    limit = limit or CHUNK_BYTES
    chunks: list[list[memoryview]] = [[]]
    room = limit
    for frame in frames:
        view = memoryview(frame).cast("B")
        start = 0
        while start < view.nbytes:
            if room == 0:
                chunks.append([])
                room = limit
            piece = view[start:start + room]
            chunks[-1].append(piece)
            start += piece.nbytes
            room -= piece.nbytes
    return chunks


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
            self._secret = parse_token(token)
        except ValueError as exc:
            raise InvalidParameterError(f"token: {exc}") from None
        if min_workers < 0:
            raise InvalidParameterError(f"min_workers must be >= 0, got {min_workers!r}")
        self.address = address
        self.token = token
        self.min_workers = int(min_workers)
        self.join_timeout = float(join_timeout)
        self.heartbeat = float(heartbeat)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.max_message_size = int(max_message_size)
        self.stats: collections.Counter[str] = collections.Counter()
        self.endpoint: str | None = None
        self._versions = local_versions()
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None
        self._implicit = False
        self._failure: BaseException | None = None
        # Random start: traffic recorded from another master with the same token names
        # search ids this master never uses, so it cannot be replayed into its searches.
        self._search_counter = secrets.randbits(48)
        self._search: _Search | None = None
        # I/O thread state
        self._peers: dict[str, _Peer] = {}  # active sessions
        self._by_route: dict[bytes, str] = {}
        self._seen: dict[str, int] = {}  # every session ever accepted -> last seq
        self._closed: dict[str, tuple[str, int]] = {}  # closed ready session -> (name, search)
        self._codec = Codec(self._secret, WORKER_TYPES)
        self._io_ident: int | None = None

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
        try:
            router.bind(self.address)
        except zmq.ZMQError as exc:
            router.close(linger=0)
            self._ctx.term()
            self._ctx = None
            raise InvalidParameterError(f"cannot listen on {self.address!r}: {exc}") from None
        self.endpoint = router.last_endpoint.decode()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._running = True
        self._thread = threading.Thread(target=self._io_main, args=(router,), name="hpsearch-remote-io", daemon=True)
        self._thread.start()
        logger.info("listening on %s; start workers with:\n  %s", self.endpoint, self.join_command)
        return self

    def close(self) -> None:
        """Say goodbye to the workers, stop the I/O thread and close the socket."""
        if self._thread is None:
            return
        self._command(("close",))
        self._thread.join(10.0)
        if self._thread.is_alive():  # its socket and pipe are still in use: leave them
            logger.error("the remote-workers I/O thread did not stop within 10 s")
            self._thread = None
            return
        self._thread = None
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

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
        from ..serialization import ContentHasher, dumps

        frames = dumps(context)
        sizes = [memoryview(f).nbytes for f in frames]
        self._search_counter += 1
        search = _Search(self._search_counter, None, _chunks(frames), sizes, sum(sizes), emit)
        # Workers holding no context at all cannot hold this one: the I/O thread starts
        # sending them the data at once, while this thread computes its content id
        # (one core; the other is the network's). The last chunk waits for the id.
        self._command(("search", search))
        try:
            hasher = ContentHasher(sizes)
            for frame in frames:
                hasher.update(frame)
            self._command(("sealed", search, hasher.hexdigest()))
        except BaseException:
            self._end_search()
            raise
        start = time.monotonic()
        deadline = start + self.join_timeout
        next_warning = start + WAITING_WARNING_AFTER
        with self._cond:
            while not self._ready_to_start(search) and self._failure is None:
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    break
                if now >= next_warning:
                    logger.warning(
                        "waiting for workers: %d of min_workers=%d ready after %.0f s (gives up after "
                        "join_timeout=%g s). %s", search.joined, self.min_workers, now - start,
                        self.join_timeout, self._join_advice())
                    next_warning = now + WAITING_WARNING_EVERY
                self._cond.wait(max(0.01, min(left, 1.0, next_warning - now)))
            if self._failure is not None:
                raise NoWorkersError(f"the remote-workers I/O thread failed: {self._failure!r}")
            joined = search.joined
            ready = self._ready_to_start(search)
        if not ready:
            self._end_search()
            raise NoWorkersError(
                f"only {joined} of min_workers={self.min_workers} worker(s) joined {self.endpoint} "
                f"within join_timeout={self.join_timeout:g} s{self._no_workers_hint()}. "
                f"Start workers with:\n  {self.join_command}"
            )

    def _no_workers_hint(self) -> str:
        return ""

    def _ready_to_start(self, search: _Search) -> bool:
        return search.joined >= self.min_workers

    def _join_advice(self) -> str:
        return f"Start workers with:\n  {self.join_command}"

    def _abandon(self, session: str, task: Task) -> bool:
        """A remote machine's fit cannot be stopped from here: its slot stays busy."""
        return False

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
        self._command(("end", done))
        done.wait(10.0)

    def _command(self, command: tuple[Any, ...]) -> None:
        self._commands.put(command)
        # One wake-up byte until the I/O thread reads it: a burst of commands (the
        # scheduler dispatching a batch of tasks) costs one write and one wake-up.
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"!")
            except (BlockingIOError, OSError):
                pass  # already woken

    @property
    def n_workers(self) -> int:
        """Workers connected now."""
        return len(self._peers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint or self.address!r}, min_workers={self.min_workers})"

    # -- the I/O thread ---------------------------------------------------------------------

    def _io_main(self, router: zmq.Socket) -> None:
        self._router = router
        self._io_ident = threading.get_ident()
        try:
            self._loop()
        except BaseException as exc:  # a bug: fail the search rather than hang it
            logger.exception("the remote-workers I/O thread failed")
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
            if self._search is not None:
                self._search.emit(PoolFailed(exc))
        finally:
            router.close()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        next_housekeeping = 0.0
        while self._running:
            blocked = any(p.outbox for p in self._peers.values())
            timeout = 0.01 if blocked else max(0.0, next_housekeeping - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if self._wake_r in events:
                try:
                    os.read(self._wake_r, 65536)
                except BlockingIOError:
                    pass
                self._wake_pending = False  # before draining: a later command writes again
            self._run_commands()
            if not self._running:
                break
            if self._router in events:
                self._receive_all()
            now = time.monotonic()
            if now >= next_housekeeping:
                self._housekeeping(now)
                next_housekeeping = now + min(self.heartbeat / 2, 0.25)
            self._flush_all()
        self._goodbye()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            kind = command[0]
            try:
                if kind == "task":
                    self._send_task(command[1], command[2])
                elif kind == "search":
                    self._finish_search()
                    self._search = command[1]
                    for peer in list(self._peers.values()):
                        self._offer_search(peer)
                elif kind == "sealed":
                    self._seal(command[1], command[2])
                elif kind == "end":
                    self._finish_search()
                    command[1].set()
                elif kind == "close":
                    self._running = False
                elif kind == "call":  # tests and subclasses: run a function on this thread
                    command[1](self)
            except Exception:
                logger.exception("remote-workers command %s failed", kind)

    # -- receiving --------------------------------------------------------------------------

    def _receive_all(self) -> None:
        for _ in range(10_000):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._receive(frames)
            except ProtocolError as exc:
                self._drop(str(exc))
            except Exception:  # never let a message crash the I/O thread
                self._drop("handler error:\n" + traceback.format_exc())

    def _drop(self, reason: str) -> None:
        self.stats["dropped"] += 1
        logger.warning("dropped a message: %s", reason)

    def _receive(self, frames: list[Any]) -> None:
        route = frames[0].bytes
        body = frames[1:]
        if len(body) != INBOUND_FRAMES:
            raise ProtocolError(f"{len(body)} frame(s); worker messages have exactly {INBOUND_FRAMES}")
        size = sum(len(f) for f in body)
        if size > self.max_message_size:
            raise ProtocolError(f"message of {size} bytes exceeds {self.max_message_size}")
        msg = self._codec.decode(body)
        now = time.monotonic()
        if msg.type == "HELLO":
            self._on_hello(route, msg, now)
            return
        peer = self._peers.get(msg.session)
        if peer is None:
            self._from_unknown(route, msg)
            return
        if msg.seq <= peer.seq_in:
            raise ProtocolError(f"replayed {msg.type} (seq {msg.seq} <= {peer.seq_in}) from {peer.name}")
        if peer.routing_id != route:
            # Signed and newer than anything seen: the worker itself, reconnected by
            # ZeroMQ after a network blip (a new connection gets a new routing id).
            logger.info("worker %s reconnected", peer.name)
            self._by_route.pop(peer.routing_id, None)
            peer.routing_id = route
            self._by_route[route] = peer.session
        peer.seq_in = self._seen[msg.session] = msg.seq
        peer.last_recv = now
        handler = getattr(self, f"_on_{msg.type.lower()}", None)
        if handler is not None:
            handler(peer, msg)

    def _from_unknown(self, route: bytes, msg: Message) -> None:
        last = self._seen.get(msg.session)
        if last is not None and msg.seq <= last:
            raise ProtocolError(f"replayed {msg.type} of a closed session")
        if last is not None:
            self._seen[msg.session] = msg.seq
            closed = self._closed.get(msg.session)
            if msg.type == "RESULT" and closed is not None:  # declared lost, yet it finished
                name, search_id = closed
                search = self._search
                if search is not None and search.id == search_id:
                    self._accept_result(route, name, msg)
        elif msg.type != "BYE":
            logger.info("a %s from unknown session %s; asking it to say HELLO again", msg.type, msg.session)
        if msg.type != "BYE":
            # Addressed to the session it answers: only that worker acts on it, and only
            # while that session lasts (a replay cannot keep a worker reconnecting).
            self._send(route, None, "SHUTDOWN", {"exit": False, "reason": "unknown session; say HELLO again"},
                       to=msg.session)

    def _on_hello(self, route: bytes, msg: Message, now: float) -> None:
        if msg.session in self._seen:
            raise ProtocolError(f"replayed HELLO (session {msg.session} already seen)")
        self._seen[msg.session] = msg.seq
        header = msg.header
        mismatch = version_mismatch(self._versions, header["versions"])
        if mismatch is not None:
            logger.warning("rejected worker %s (%s): %s", header["name"], header["host"], mismatch)
            self.stats["rejected"] += 1
            self._send(route, None, "REJECT", {"reason": mismatch}, to=msg.session)
            return
        if header["slots"] < 1 or not all(isinstance(c, str) for c in header["contexts"]):
            raise ProtocolError("HELLO with bad slots or contexts")
        old_session = self._by_route.get(route)
        if old_session is not None:
            self._lose(self._peers[old_session], "said HELLO again")
        for other in list(self._peers.values()):
            if other.worker_id == header["worker_id"]:
                self._lose(other, "reconnected")
        name = base = header["name"][:100] or "worker"
        taken = {p.name for p in self._peers.values()}
        k = 1
        while name in taken:
            k += 1
            name = f"{base}#{k}"
        worker = RemoteWorker(self, msg.session, name, header["slots"])
        peer = _Peer(route, msg.session, header["worker_id"], name, header["slots"], header["pid"],
                     header["host"], worker, last_recv=now, seq_in=msg.seq, contexts=set(header["contexts"]))
        self._peers[msg.session] = peer
        self._by_route[route] = msg.session
        self.stats["hellos"] += 1
        logger.info("worker %s joined from %s (pid %d, %d slot(s))", name, peer.host, peer.pid, peer.slots)
        self._send(route, peer, "WELCOME", {"name": name, "heartbeat": self.heartbeat,
                                            "timeout": self.heartbeat_timeout})
        self._offer_search(peer)

    def _on_ready(self, peer: _Peer, msg: Message) -> None:
        search = self._search
        if search is None or msg["search"] != search.id or peer.state not in ("asked", "sending"):
            return
        if msg["error"] is not None:
            peer.state = "failed"
            logger.error("worker %s could not load the context; it will not be used:\n%s", peer.name, msg["error"])
            return
        if msg["context_id"] != search.context_id:
            raise ProtocolError(f"READY from {peer.name} names context {msg['context_id']}, not {search.context_id}")
        peer.state = "ready"
        peer.contexts.add(msg["context_id"])
        search.emit(WorkerJoined(peer.worker))
        with self._cond:
            search.joined += 1
            self._cond.notify_all()

    def _on_need(self, peer: _Peer, msg: Message) -> None:
        search = self._search
        if search is None or msg["search"] != search.id or peer.state != "asked":
            return
        peer.state = "sending"
        peer.chunk_next = 0
        peer.credit = max(1, min(msg["credit"], 64))
        self.stats["contexts_sent"] += 1
        self.stats["context_bytes_sent"] += search.nbytes
        self._pump_context(peer)

    def _on_credit(self, peer: _Peer, msg: Message) -> None:
        search = self._search
        if search is None or msg["search"] != search.id or peer.state != "sending":
            return
        peer.credit += max(0, min(msg["credit"], 64))
        self._pump_context(peer)

    def _on_result(self, peer: _Peer, msg: Message) -> None:
        # Accepted whatever the peer's state: a worker re-offering results after a
        # reconnect has not said READY yet. The search id (random per search) ties the
        # result to this search; the scheduler keeps the first result of each task.
        peer.inflight.pop(msg["task_id"], None)
        self._accept_result(peer.routing_id, peer.name, msg, peer)

    def _accept_result(self, route: bytes, name: str, msg: Message, peer: _Peer | None = None) -> None:
        search = self._search
        event: TaskFinished | TaskFailed | None = None
        if search is None or msg["search"] != search.id:
            self.stats["stale_results"] += 1
        elif msg["failure"] is not None:
            event = TaskFailed(name, msg["task_id"], msg["attempt"], msg["failure"])
        else:
            try:
                result = FoldResult.from_message(msg["result"])
            except (ValueError, TypeError, KeyError) as exc:
                raise ProtocolError(f"invalid result from {name}: {exc}") from None
            event = TaskFinished(name, msg["task_id"], msg["attempt"], result)
        # Acks ride on the worker's next TASK, which the scheduler sends from this
        # thread while it handles this very result (else they leave on their own within
        # the housekeeping period): one message less per task for both sides to sign,
        # send, wake up for and check. Queued before ``emit``, an ack still never leaves
        # before the scheduler has the result: ``emit`` handles it before returning, and
        # before anything else this thread sends.
        ack = [msg["search"], msg["task_id"], msg["attempt"]]
        if peer is not None:
            peer.acks.append(ack)
        if event is not None:
            self.stats["results"] += 1
            search.emit(event)
        if peer is None:
            self._send(route, None, "RESULT_ACK", {"acks": [ack]}, to=msg.session)
        elif len(peer.acks) >= MAX_ACKS:
            self._flush_acks(peer)

    def _flush_acks(self, peer: _Peer) -> None:
        if peer.acks and peer.session in self._peers:
            acks, peer.acks = peer.acks, []
            self._send(peer.routing_id, peer, "RESULT_ACK", {"acks": acks})

    def _on_bye(self, peer: _Peer, msg: Message) -> None:
        self._lose(peer, f"left: {msg['reason']}")

    # -- sending ----------------------------------------------------------------------------

    def _send(self, route: bytes, peer: _Peer | None, kind: str, fields: dict[str, Any] | None = None,
              payload: list[Any] | tuple = (), *, to: str | None = None) -> None:
        """Send to ``peer``, or to the session ``to`` at ``route`` (not a peer: no outbox)."""
        to = peer.session if peer is not None else to
        assert to is not None, "every master message names the worker session it is for"
        frames = [route, *self._codec.encode(kind, fields, payload, to=to)]
        if peer is None:
            try:
                self._router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.debug("could not send %s to an unknown peer: %s", kind, exc)
            return
        peer.last_send = time.monotonic()
        peer.outbox.append(frames)
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        while peer.outbox:
            try:
                self._router.send_multipart(peer.outbox[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if exc.errno == errno.EHOSTUNREACH:
                    self._lose(peer, "connection gone")
                    return
                raise
            peer.outbox.popleft()

    def _flush_all(self) -> None:
        for peer in list(self._peers.values()):
            if peer.outbox:
                self._flush(peer)

    def _offer_search(self, peer: _Peer) -> None:
        search = self._search
        if search is None or peer.session not in self._peers:
            return
        if search.context_id is None and peer.contexts:
            peer.state = "waiting"  # it may hold this context: ask once its id is known
            return
        peer.state = "asked"
        self._send(peer.routing_id, peer, "SEARCH",
                   {"search": search.id, "context_id": search.context_id, "nbytes": search.nbytes})

    def _seal(self, search: _Search, context_id: str) -> None:
        """The context's id is known: ask the waiting workers, finish the transfers."""
        if search is not self._search:
            return
        search.context_id = context_id
        for peer in list(self._peers.values()):
            if peer.state == "waiting":
                self._offer_search(peer)
            elif peer.state == "sending":
                self._pump_context(peer)

    def _pump_context(self, peer: _Peer) -> None:
        search = self._search
        assert search is not None
        while peer.credit > 0 and peer.chunk_next < len(search.chunks):
            index = peer.chunk_next
            if index == len(search.chunks) - 1 and search.context_id is None:
                return  # the last chunk carries the id: _seal sends it
            fields = {"search": search.id, "context_id": search.context_id,
                      "index": index, "count": len(search.chunks)}
            if index == 0:
                fields["sizes"] = search.sizes
            # Signed by length: the worker checks the bytes against the content id.
            self._send(peer.routing_id, peer, "CONTEXT", fields, search.chunks[index])
            peer.chunk_next += 1
            peer.credit -= 1

    def _send_task(self, session: str, task: Task) -> None:
        from ..serialization import dumps

        peer = self._peers.get(session)
        search = self._search
        if peer is None or search is None:
            return  # the worker is gone: the scheduler requeues its tasks on WorkerLost
        try:
            frames = dumps(task.params)
        except Exception as exc:  # the task cannot travel: it fails as data, nothing hangs
            logger.error("task %d cannot be sent to %s: %r", task.task_id, peer.name, exc)
            search.emit(TaskFailed(peer.name, task.task_id, task.attempt,
                                   f"the params could not be serialized: {type(exc).__name__}: {exc}"))
            return
        fields = {"search": search.id, "task_id": task.task_id, "attempt": task.attempt,
                  "context_id": search.context_id, "fold": task.fold}
        if peer.acks:
            fields["acks"], peer.acks = peer.acks, []
        peer.inflight[task.task_id] = task.attempt
        self.stats["tasks_sent"] += 1
        self.stats[f"tasks_to:{peer.name}"] += 1
        if len(frames) == 2 and sum(memoryview(f).nbytes for f in frames) <= INLINE_PARAMS_BYTES:
            # Usual params (a few numbers and strings) travel inside the signed header:
            # two frames fewer, each a pyzmq call that gives up the GIL.
            fields["params"] = [bytes(f) for f in frames]
            frames = []
        self._send(peer.routing_id, peer, "TASK", fields, frames)

    # -- membership -------------------------------------------------------------------------

    def _lose(self, peer: _Peer, reason: str) -> None:
        if self._peers.pop(peer.session, None) is None:
            return
        self._by_route.pop(peer.routing_id, None)
        self.stats["lost"] += 1
        search = self._search
        if search is not None and peer.state == "ready":
            self._closed[peer.session] = (peer.name, search.id)
        logger.warning("worker %s lost: %s", peer.name, reason)
        if search is not None and peer.state == "ready":
            search.emit(WorkerLost(peer.name, reason))

    def _dead_pids(self) -> set[int]:
        """Pids known to have exited (LocalProcesses knows its children)."""
        return set()

    def _housekeeping(self, now: float) -> None:
        dead = self._dead_pids()
        for peer in list(self._peers.values()):
            if peer.pid in dead:
                self._lose(peer, f"process {peer.pid} exited")
            elif now - peer.last_recv > self.heartbeat_timeout:
                self._lose(peer, f"silent for {now - peer.last_recv:.1f} s")
            elif peer.acks:
                self._flush_acks(peer)
            elif now - peer.last_send >= self.heartbeat and not peer.outbox:
                self._send(peer.routing_id, peer, "HEARTBEAT")
        search = self._search
        if search is not None and search.joined >= self.min_workers:
            ready = sum(p.state == "ready" for p in self._peers.values())
            if ready:
                search.no_workers_since = None
            elif search.no_workers_since is None:
                search.no_workers_since = now
            elif now - search.no_workers_since > self.join_timeout:
                search.emit(PoolFailed(NoWorkersError(
                    f"every remote worker was lost and none joined for {self.join_timeout:g} s. "
                    f"Start workers with:\n  {self.join_command}")))
                search.no_workers_since = None

    def _finish_search(self) -> None:
        search = self._search
        if search is None:
            return
        for peer in list(self._peers.values()):  # sending may lose a peer
            peer.state = "idle"
            peer.inflight.clear()
            self._flush_acks(peer)
            self._send(peer.routing_id, peer, "CANCEL", {"search": search.id})
        with self._cond:
            self._search = None

    def _goodbye(self) -> None:
        self._finish_search()
        reason = "the search is over" if self._exit_on_close else "the master closed; waiting for the next one"
        for peer in list(self._peers.values()):
            logger.debug("SHUTDOWN to %s", peer.name)
            self._send(peer.routing_id, peer, "SHUTDOWN", {"exit": self._exit_on_close, "reason": reason})
        deadline = time.monotonic() + 1.0
        while any(p.outbox for p in self._peers.values()) and time.monotonic() < deadline:
            self._flush_all()
            time.sleep(0.01)
        # Give the last small messages a moment to leave before the socket closes
        # (LINGER alone was seen to lose a SHUTDOWN sent just before close).
        if self._peers:
            time.sleep(0.2)
        self._router.setsockopt(zmq.LINGER, 500)
        self._peers.clear()

    # For tests: run ``fn(pool)`` on the I/O thread.
    def _call_in_io_thread(self, fn: Callable[[RemoteWorkers], None]) -> None:
        self._command(("call", fn))
