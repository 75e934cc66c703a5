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
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import zmq

from ..errors import ProtocolError
from .base import Emit, PoolFailed, Task, WorkerJoined
from .calls import CallDone
from .gate import InboundGate
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
                 housekeeping: Callable[[float], None] | None = None,
                 on_call_done: Callable[[CallDone], None] | None = None) -> None:
        self.router = router
        self.table = table
        self.codec = codec
        self.period = min(heartbeat / 2, 0.25)
        self.max_message_size = max_message_size
        self.gate = InboundGate(max_message_size, frames=INBOUND_FRAMES)
        self.exit_on_close = exit_on_close
        self.on_joined = on_joined
        self.on_failure = on_failure
        self.dead_pids = dead_pids
        self.housekeeping = housekeeping
        self.on_call_done = on_call_done
        self.ident: int | None = None
        self.waker = Waker()
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._running = True
        self._emit: Emit | None = None  # the current search's
        self._outboxes: dict[str, collections.deque[list[Any]]] = {}

    # -- any thread -------------------------------------------------------------------------

    def command(self, *command: Any) -> None:
        """Queue ``("task", session, task)``, ``("tasks", session, tasks)``, ``("search", offer, emit)``,
        ``("sealed", search_id, context_id)``, ``("end", event)``, ``("call", call)`` or
        ``("close",)``."""
        self._commands.put(command)
        self.waker.wake()

    def submit(self, session: str, task: Task) -> None:
        if threading.get_ident() == self.ident:  # the scheduler handling a result: send now
            self._execute(self.table.submit(session, task, time.monotonic()))
        else:
            self.command("task", session, task)

    def submit_many(self, session: str, tasks: Sequence[Task]) -> None:
        if threading.get_ident() == self.ident:
            self._execute(self.table.submit_many(session, tasks, time.monotonic()))
        else:
            self.command("tasks", session, tasks)

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
            if self.on_call_done is not None:
                for done in self.table.calls.fail_all(f"the I/O thread failed: {exc!r}"):
                    self.on_call_done(done)
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
                elif kind == "tasks":
                    self._execute(table.submit_many(command[1], command[2], now))
                elif kind == "search":
                    self._execute(table.end_search(now))
                    self._emit = command[2]
                    self._execute(table.start_search(command[1], now))
                elif kind == "call":
                    self._execute(table.call(command[1], now))
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
            if isinstance(output, CallDone):  # a joblib call: its caller's, not the search's
                if self.on_call_done is not None:
                    self.on_call_done(output)
                continue
            if isinstance(output, WorkerJoined):
                self.on_joined()
            if self._emit is not None:
                self._emit(output)

    def _receive_all(self) -> None:
        router, now = self.router, time.monotonic()
        for _ in range(10_000):
            try:
                head = router.recv(zmq.NOBLOCK, copy=False)  # the routing id
            except zmq.Again:
                return
            # Frame by frame: only the first body frame is kept; any further frame (no
            # worker sends one) is counted and let go at once, so a message of many
            # frames holds at most one of them here, whatever its total.
            body: Any = None
            nframes = nbytes = 0
            more = head.more
            while more:
                frame = router.recv(copy=False)
                more = frame.more
                nframes += 1
                nbytes += len(frame)
                if nframes == 1:
                    body = frame
            route = head.bytes
            refused = self.gate.admit(route, nbytes, nframes, self.table.knows_route(route))
            if refused is not None:  # before any signature check: junk costs a counter
                self._drop(refused, now)
                continue
            try:
                msg = self.codec.decode([body])  # checks the signature before decoding anything
                self._execute(self.table.receive(route, msg, time.monotonic()))
            except ProtocolError as exc:
                self._drop("invalid", now, str(exc))
            except Exception:  # never let a message crash the I/O thread
                self._drop("handler error", now)
                logger.exception("a worker message could not be handled")

    def _drop(self, reason: str, now: float, detail: str = "") -> None:
        """Count a refused message; log a summary at most every ``gate.log_interval`` s."""
        stats = self.table.stats
        stats["dropped"] += 1
        stats[f"dropped_{reason.replace(' ', '_')}"] += 1
        line = self.gate.refuse(reason, now)
        if line is not None:
            logger.warning("%s%s", line, f" (latest: {detail})" if detail else "")
        elif detail:
            logger.debug("dropped a message: %s", detail)

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
