"""The master side of the ZeroMQ protocol: :class:`RemoteWorkers`.

One I/O thread owns the ROUTER socket, and no other thread touches it. It
authenticates every inbound message before decoding it, drops and logs anything
wrong (never raising), and hands the rest to the sans-I/O
:class:`~hpsearch.workers.peers.PeerTable`, whose answers it carries out: messages
into per-worker outboxes (sent without blocking, in order), events to the scheduler.
The scheduler handles each result on this thread, so the next task usually goes out
in the same pass; ``RemoteWorker.submit`` from any other thread puts a command on a
queue and wakes the I/O thread (:class:`~hpsearch.workers.waker.Waker`).

The master never unpickles anything a worker sends: worker messages are msgpack
headers only, and results are rebuilt with ``FoldResult.from_message``.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import queue
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import zmq

from ..errors import InvalidParameterError, NoWorkersError, ProtocolError
from ..evaluation import EvaluationContext
from .base import Emit, PoolFailed, Task, WorkerJoined
from .peers import Output, PeerTable, Send
from .protocol import WORKER_TYPES, Codec, make_token, parse_token
from .protocol import local_versions
from .transfer import Offer, hash_frames
from .waker import Waker

logger = logging.getLogger(__name__)

__all__ = ["RemoteWorker", "RemoteWorkers"]

#: Frames of a worker message: the envelope alone (workers never send payload frames,
#: so nothing a worker sends could ever reach a deserializer other than msgpack).
INBOUND_FRAMES = 1


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
            pool._execute(pool._table.submit(self.session, task, time.monotonic()))
        else:
            pool._command(("task", self.session, task))

    def close(self) -> None:
        """Nothing to do: the pool owns the connection."""

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
            secret = parse_token(token)
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
        self.endpoint: str | None = None
        self._table = PeerTable(local_versions(), self._make_worker, heartbeat=self.heartbeat,
                                heartbeat_timeout=self.heartbeat_timeout, min_workers=self.min_workers,
                                join_timeout=self.join_timeout)
        self.stats = self._table.stats
        self._codec = Codec(secret, WORKER_TYPES)
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._cond = threading.Condition()  # guards _joined and _failure
        self._joined = 0
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None
        self._waker: Waker | None = None
        self._implicit = False
        # Random start: traffic recorded from another master with the same token names
        # search ids this master never uses, so it cannot be replayed into its searches.
        self._search_counter = secrets.randbits(48)
        self._emit: Emit | None = None  # the current search's; I/O thread only
        self._io_ident: int | None = None
        self._outboxes: dict[str, collections.deque[list[Any]]] = {}

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
        try:
            router.bind(self.address)
        except zmq.ZMQError as exc:
            router.close(linger=0)
            self._ctx.term()
            self._ctx = None
            raise InvalidParameterError(f"cannot listen on {self.address!r}: {exc}") from None
        self.endpoint = router.last_endpoint.decode()
        self._table.hint = f" Start workers with:\n  {self.join_command}"
        self._waker = Waker()
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
        if self._waker is not None:
            self._waker.close()
            self._waker = None
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
        from ..serialization import dumps

        frames = dumps(context)
        self._search_counter += 1
        offer = Offer.from_frames(self._search_counter, frames)
        with self._cond:
            self._joined = 0
        # Workers holding no context at all cannot hold this one: the I/O thread starts
        # sending them the data at once, while this thread computes its content id
        # (one core; the other is the network's). The last chunk waits for the id.
        self._command(("search", offer, emit))
        try:
            self._command(("sealed", offer.search, hash_frames(frames)))
        except BaseException:
            self._end_search()
            raise
        deadline = time.monotonic() + self.join_timeout
        with self._cond:
            while self._joined < self.min_workers and self._failure is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
            if self._failure is not None:
                raise NoWorkersError(f"the remote-workers I/O thread failed: {self._failure!r}")
            joined = self._joined
        if joined < self.min_workers:
            self._end_search()
            raise NoWorkersError(
                f"only {joined} of min_workers={self.min_workers} worker(s) joined {self.endpoint} "
                f"within join_timeout={self.join_timeout:g} s{self._no_workers_hint()}. "
                f"Start workers with:\n  {self.join_command}"
            )

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
        self._command(("end", done))
        done.wait(10.0)

    def _command(self, command: tuple[Any, ...]) -> None:
        self._commands.put(command)
        if self._waker is not None:
            self._waker.wake()

    @property
    def n_workers(self) -> int:
        """Workers connected now."""
        return len(self._table.peers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint or self.address!r}, min_workers={self.min_workers})"

    def _dead_pids(self) -> set[int]:
        """Pids known to have exited (LocalProcesses knows its children)."""
        return set()

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
            if self._emit is not None:
                self._emit(PoolFailed(exc))
        finally:
            router.close()

    def _loop(self) -> None:
        assert self._waker is not None
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._waker.fileno(), zmq.POLLIN)
        next_housekeeping = 0.0
        while self._running:
            blocked = any(self._outboxes.values())
            timeout = 0.01 if blocked else max(0.0, next_housekeeping - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if self._waker.fileno() in events:
                self._waker.drain()  # before the commands: a later one wakes again
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
        table = self._table
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            kind, now = command[0], time.monotonic()
            try:
                if kind == "task":
                    self._execute(table.submit(command[1], command[2], now))
                elif kind == "search":
                    self._execute(table.end_search(now))
                    self._emit = command[2]
                    self._execute(table.start_search(command[1], now))
                elif kind == "sealed":
                    self._execute(table.seal(command[1], command[2], now))
                elif kind == "end":
                    self._execute(table.end_search(now))
                    self._emit = None
                    command[1].set()
                elif kind == "close":
                    self._running = False
            except Exception:
                logger.exception("remote-workers command %s failed", kind)

    def _execute(self, outputs: Iterable[Output]) -> None:
        """Carry out the table's answers, in order: messages out, events to the scheduler."""
        for output in outputs:
            if isinstance(output, Send):
                self._send(output)
                continue
            if isinstance(output, WorkerJoined):
                with self._cond:
                    self._joined += 1
                    self._cond.notify_all()
            if self._emit is not None:
                self._emit(output)

    def _housekeeping(self, now: float) -> None:
        busy = [session for session, box in self._outboxes.items() if box]
        self._execute(self._table.tick(now, self._dead_pids(), busy))
        for session in [s for s in self._outboxes if s not in self._table.peers]:
            del self._outboxes[session]  # lost: what it had not received is moot

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
        self._execute(self._table.receive(route, msg, time.monotonic()))

    # -- sending ----------------------------------------------------------------------------

    def _send(self, send: Send) -> None:
        """Queue a message for a peer (in order, never blocking); best effort for others."""
        frames = [send.route, *self._codec.encode(send.kind, send.fields, send.payload, to=send.to)]
        box = self._outboxes.get(send.to)
        if box is None and send.to in self._table.peers:
            box = self._outboxes[send.to] = collections.deque()
        if box is None:
            try:
                self._router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.debug("could not send %s to an unknown peer: %s", send.kind, exc)
            return
        box.append(frames)
        self._flush(send.to, box)

    def _flush(self, session: str, box: collections.deque[list[Any]]) -> None:
        while box:
            try:
                self._router.send_multipart(box[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if exc.errno == errno.EHOSTUNREACH:
                    box.clear()
                    self._execute(self._table.lose(session, "connection gone"))
                    return
                raise
            box.popleft()

    def _flush_all(self) -> None:
        for session, box in list(self._outboxes.items()):
            if box:
                self._flush(session, box)

    def _goodbye(self) -> None:
        reason = "the search is over" if self._exit_on_close else "the master closed; waiting for the next one"
        self._execute(self._table.goodbye(time.monotonic(), self._exit_on_close, reason))
        self._emit = None
        deadline = time.monotonic() + 1.0
        while any(self._outboxes.values()) and time.monotonic() < deadline:
            self._flush_all()
            time.sleep(0.01)
        # Give the last small messages a moment to leave before the socket closes
        # (LINGER alone was seen to lose a SHUTDOWN sent just before close).
        if self._outboxes:
            time.sleep(0.2)
        self._router.setsockopt(zmq.LINGER, 500)
        self._outboxes.clear()
