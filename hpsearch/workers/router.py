"""The master's I/O thread: :class:`RouterLoop`, the only user of the ROUTER socket.

It authenticates every inbound message before decoding it, drops and logs anything
wrong (never raising), and hands the rest to the sans-I/O
:class:`~hpsearch.workers.peers.PeerTable`, whose answers it carries out in order:
messages into per-worker outboxes (sent without blocking), events to the current
search's ``emit``. The scheduler handles each event on this thread, so the next task
usually goes out in the same pass; other threads (the search's caller, a scheduler
running elsewhere) put commands on a queue and wake the loop with a
:class:`~hpsearch.workers.waker.Waker`. Housekeeping (liveness, heartbeats, acks)
runs every ``min(heartbeat / 2, 0.25)`` seconds.
"""

from __future__ import annotations

import collections
import errno
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterable
from typing import Any

import zmq

from ..errors import ProtocolError
from .base import Emit, PoolFailed, Task, WorkerJoined
from .peers import Output, PeerTable, Send
from .protocol import Codec
from .waker import Waker

logger = logging.getLogger(__name__)

__all__ = ["RouterLoop", "INBOUND_FRAMES"]

#: Frames of a worker message: the envelope alone (workers never send payload frames,
#: so nothing a worker sends could ever reach a deserializer other than msgpack).
INBOUND_FRAMES = 1


class RouterLoop:
    """The poll loop around one bound ROUTER socket; :meth:`run` is the thread's body.

    ``on_joined`` is called for each worker ready for the search, ``on_failure`` if
    the loop itself fails (a bug), both on this thread; ``dead_pids`` names worker
    processes known to have exited; ``exit_on_close`` is what the goodbye SHUTDOWN
    tells workers (exit, or wait for the next master); ``housekeeping(now)``, if
    given, runs on this thread before each liveness check (a pool that supervises its
    processes replaces dead ones there).
    """

    def __init__(self, router: zmq.Socket, table: PeerTable, codec: Codec, *, heartbeat: float,
                 max_message_size: int, exit_on_close: bool, on_joined: Callable[[], None],
                 on_failure: Callable[[BaseException], None],
                 dead_pids: Callable[[], Collection[int]] = frozenset,
                 housekeeping: Callable[[float], None] | None = None) -> None:
        self.router = router
        self.table = table
        self.codec = codec
        self.period = min(heartbeat / 2, 0.25)
        self.max_message_size = max_message_size
        self.exit_on_close = exit_on_close
        self.on_joined = on_joined
        self.on_failure = on_failure
        self.dead_pids = dead_pids
        self.housekeeping = housekeeping
        self.ident: int | None = None
        self.waker = Waker()
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._running = True
        self._emit: Emit | None = None  # the current search's
        self._outboxes: dict[str, collections.deque[list[Any]]] = {}

    # -- any thread -------------------------------------------------------------------------

    def command(self, *command: Any) -> None:
        """Queue ``("task", session, task)``, ``("search", offer, emit)``,
        ``("sealed", search_id, context_id)``, ``("end", event)`` or ``("close",)``."""
        self._commands.put(command)
        self.waker.wake()

    def submit(self, session: str, task: Task) -> None:
        if threading.get_ident() == self.ident:  # the scheduler handling a result: send now
            self._execute(self.table.submit(session, task, time.monotonic()))
        else:
            self.command("task", session, task)

    # -- the loop's thread ------------------------------------------------------------------

    @property
    def searching(self) -> bool:
        """Whether a search is being served (its ``emit`` is set)."""
        return self._emit is not None

    def emit(self, event: Any) -> None:
        """Hand ``event`` to the current search, if any (this thread only)."""
        if self._emit is not None:
            self._emit(event)

    def run(self) -> None:
        self.ident = threading.get_ident()
        try:
            self._loop()
        except BaseException as exc:  # a bug: fail the search rather than hang it
            logger.exception("the remote-workers I/O thread failed")
            self.on_failure(exc)
            if self._emit is not None:
                self._emit(PoolFailed(exc))
        finally:
            self.router.close()
            self.waker.close()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.waker.fileno(), zmq.POLLIN)
        next_housekeeping = 0.0
        while self._running:
            blocked = any(self._outboxes.values())
            timeout = 0.01 if blocked else max(0.0, next_housekeeping - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if self.waker.fileno() in events:
                self.waker.drain()  # before the commands: a later one wakes again
            self._run_commands()
            if not self._running:
                break
            if self.router in events:
                self._receive_all()
            now = time.monotonic()
            if now >= next_housekeeping:
                if self.housekeeping is not None:
                    self.housekeeping(now)
                busy = [session for session, box in self._outboxes.items() if box]
                self._execute(self.table.tick(now, self.dead_pids(), busy))
                for session in [s for s in self._outboxes if s not in self.table.peers]:
                    del self._outboxes[session]  # lost: what it had not received is moot
                next_housekeeping = now + self.period
            self._flush_all()
        self._goodbye()

    def _run_commands(self) -> None:
        table = self.table
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
                self.on_joined()
            if self._emit is not None:
                self._emit(output)

    def _receive_all(self) -> None:
        for _ in range(10_000):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._receive(frames)
            except ProtocolError as exc:
                self._drop(str(exc))
            except Exception:  # never let a message crash the I/O thread
                self._drop("handler error:\n" + traceback.format_exc())

    def _drop(self, reason: str) -> None:
        self.table.stats["dropped"] += 1
        logger.warning("dropped a message: %s", reason)

    def _receive(self, frames: list[Any]) -> None:
        route = frames[0].bytes
        body = frames[1:]
        if len(body) != INBOUND_FRAMES:
            raise ProtocolError(f"{len(body)} frame(s); worker messages have exactly {INBOUND_FRAMES}")
        size = sum(len(f) for f in body)
        if size > self.max_message_size:
            raise ProtocolError(f"message of {size} bytes exceeds {self.max_message_size}")
        msg = self.codec.decode(body)  # checks the signature before decoding anything
        self._execute(self.table.receive(route, msg, time.monotonic()))

    def _send(self, send: Send) -> None:
        """Queue a message for a peer (in order, never blocking); best effort for others."""
        frames = [send.route, *self.codec.encode(send.kind, send.fields, send.payload, to=send.to)]
        box = self._outboxes.get(send.to)
        if box is None and send.to in self.table.peers:
            box = self._outboxes[send.to] = collections.deque()
        if box is None:
            try:
                self.router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.debug("could not send %s to an unknown peer: %s", send.kind, exc)
            return
        box.append(frames)
        self._flush(send.to, box)

    def _flush(self, session: str, box: collections.deque[list[Any]]) -> None:
        while box:
            try:
                self.router.send_multipart(box[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if exc.errno == errno.EHOSTUNREACH:
                    box.clear()
                    self._execute(self.table.lose(session, "connection gone"))
                    return
                raise
            box.popleft()

    def _flush_all(self) -> None:
        for session, box in list(self._outboxes.items()):
            if box:
                self._flush(session, box)

    def _goodbye(self) -> None:
        reason = "the search is over" if self.exit_on_close else "the master closed; waiting for the next one"
        self._execute(self.table.goodbye(time.monotonic(), self.exit_on_close, reason))
        self._emit = None
        deadline = time.monotonic() + 1.0
        while any(self._outboxes.values()) and time.monotonic() < deadline:
            self._flush_all()
            time.sleep(0.01)
        # Give the last small messages a moment to leave before the socket closes
        # (LINGER alone was seen to lose a SHUTDOWN sent just before close).
        if self._outboxes:
            time.sleep(0.2)
        self.router.setsockopt(zmq.LINGER, 500)
        self._outboxes.clear()
