"""The ``hpsearch-worker`` process: one DEALER socket, N slot threads.

The main thread owns the socket and runs one poll loop (the Paranoid Pirate
structure): it answers the master, sends heartbeats every ``heartbeat`` seconds even
while fits run (fits run on slot threads; scikit-learn releases the GIL in its
kernels), and reconnects on a fresh socket with full-jitter exponential backoff when
the master is silent past its timeout. A one-slot ``hpsearch-worker`` whose tasks are
short (the last one took under ``INLINE_TASK_SECONDS``) runs them on the main thread
instead, saving two thread wake-ups a task; should one run long, a keep-alive thread
stands in: it sends the heartbeats and, asked to stop, says BYE and exits at once.
Finished results are kept until the master acknowledges them and are sent again after
a reconnect. Contexts are cached by content id, so a second search on the same data
does not ship it again.

A worker trusts its master completely (it unpickles the context and the params the
master sends, after checking the signature); the master trusts workers only for
scores (results are msgpack).
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import queue
import random
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from ..errors import ProtocolError, VersionMismatchError
from ..evaluation import EvaluationContext, clip_text, evaluate
from ..serialization import ContentHasher
from .protocol import MASTER_TYPES, Codec, Message, host_name, local_versions

logger = logging.getLogger(__name__)

__all__ = ["WorkerAgent"]

# Plain ints: pyzmq's flag enums cost microseconds per operation in the poll loop.
_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)

#: Chunks of a context the master may have in flight to this worker (memory bound).
CONTEXT_CREDIT = 4
#: A one-slot worker that owns its process runs a task on its main thread, without a
#: hand-off to the slot thread and back, when the search's last task succeeded in less
#: than this (seconds).
INLINE_TASK_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class _Job:
    epoch: int
    search: int
    task_id: int
    attempt: int
    context: EvaluationContext
    params: dict[str, Any]
    fold: int


#: Linux's madvise(MADV_POPULATE_WRITE) (5.14+): fault pages in ahead of their use.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _fresh_block(nbytes: int, stop: threading.Event) -> np.ndarray:
    """Memory for a context arriving, in base pages, faulted in ahead of the data.

    Fresh memory costs a page fault and a page of zeroing per 4 KiB on first touch,
    which on virtual machines costs about as much as receiving the data (and, for
    the transparent huge pages numpy asks for on large arrays, 2 to 5 times more).
    So the block is an anonymous mapping in base pages, and a thread faults it in
    with ``MADV_POPULATE_WRITE`` ahead of the copy, in the kernel, without the GIL,
    while the network delivers (``benchmarks/bench_transfer.py``: 1 GiB to a fresh
    worker 4.3 s with numpy's block, 1.2 to 1.6 s with this one, raw send 0.9 to 1.1 s).
    Elsewhere, a plain numpy array. Setting ``stop`` ends the faulting in.
    """
    if nbytes == 0 or not sys.platform.startswith("linux"):
        return np.empty(nbytes, dtype=np.uint8)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.madvise(mmap.MADV_NOHUGEPAGE)
    block = np.frombuffer(memory, dtype=np.uint8)
    threading.Thread(target=_populate, args=(block, stop), name="hpsearch-populate", daemon=True).start()
    return block


def _populate(block: np.ndarray, stop: threading.Event, step: int = 8 << 20) -> None:
    """Fault ``block`` in, front to back, until ``stop`` is set (a dropped transfer must
    not cost its whole size in memory); stops quietly where the kernel cannot."""
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise  # ctypes releases the GIL
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    address = block.ctypes.data
    for offset in range(0, block.nbytes, step):
        if stop.is_set():
            return
        if madvise(address + offset, min(step, block.nbytes - offset), _MADV_POPULATE_WRITE) != 0:
            return  # EINVAL before Linux 5.14: the copy faults the pages in itself


class _Incoming:
    """A context arriving chunk by chunk, hashed and copied into one preallocated block.

    Each chunk's frames are fed to the content hash and copied into place, then
    released, so the worker holds the data about once (plus the credit window), and
    ``loads`` rebuilds the arrays on adjacent slices of the block without another
    copy. Chunks are signed by length only: :meth:`frames` refuses the bytes unless
    they hash to the content id the master announced, before anything is unpickled.
    The hash of one chunk runs while the next one is in transit.
    """

    def __init__(self, search: int, context_id: str | None) -> None:
        self.search = search
        self.context_id = context_id  # None until a chunk names it (the last one does)
        self.hasher: ContentHasher | None = None
        self.block: np.ndarray | None = None
        self.stop = threading.Event()  # ends the thread faulting the block in
        self.sizes: list[int] = []
        self.offset = 0
        self.next_index = 0

    def add(self, msg: Message) -> bool:
        """Store a chunk; True when it was the last one."""
        if msg["index"] != self.next_index:
            raise ProtocolError(f"context chunk {msg['index']} arrived, {self.next_index} expected")
        named = msg["context_id"]
        if named is not None:
            if self.context_id is not None and named != self.context_id:
                raise ProtocolError(f"a chunk names context {named[:12]}, not {self.context_id[:12]}")
            self.context_id = named
        if self.block is None:
            sizes = msg.header.get("sizes")
            if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
                raise ProtocolError("the first context chunk must list every frame size")
            self.sizes = sizes
            self.hasher = ContentHasher(sizes)  # checks the sizes describe a header and a stream
            self.block = _fresh_block(sum(sizes), self.stop)
        assert self.hasher is not None
        for frame in msg.payload:
            view = memoryview(frame)
            end = self.offset + view.nbytes
            if end > self.block.nbytes:
                raise ProtocolError("context chunks hold more bytes than announced")
            self.hasher.update(view)
            self.block[self.offset:end] = np.frombuffer(view, dtype=np.uint8)
            self.offset = end
        self.next_index += 1
        return self.next_index == msg["count"]

    def frames(self) -> list[memoryview]:
        assert self.block is not None
        if self.offset != self.block.nbytes:
            raise ProtocolError(f"context holds {self.offset} bytes, {self.block.nbytes} announced")
        assert self.hasher is not None
        if self.context_id is None:
            raise ProtocolError("the last context chunk did not name the context's id")
        if self.hasher.hexdigest() != self.context_id:
            raise ProtocolError(
                f"the context received does not hash to its content id {self.context_id[:12]}: "
                "corrupted or altered in transit; nothing of it was unpickled"
            )
        whole = memoryview(self.block)
        out, start = [], 0
        for size in self.sizes:
            out.append(whole[start:start + size])
            start += size
        return out


class WorkerAgent:
    """The worker process loop behind the ``hpsearch-worker`` command.

    Parameters
    ----------
    address : str
        The master's ZeroMQ endpoint, e.g. ``"tcp://master:5555"``.
    secret : bytes
        The secret from the join token.
    slots : int
        Tasks run at once (threads).
    name : str, optional
        Shown by the master; default ``host-pid``.
    inner_threads : int, optional
        BLAS/OpenMP threads per fit; default ``cores // slots``.
    version_overrides : dict, optional
        For tests only: versions announced instead of the real ones.
    heartbeat : float
        Seconds between heartbeats when nothing else is sent.
    hello_timeout : float
        Seconds to wait for WELCOME before trying again.
    backoff_base, backoff_cap : float
        Full-jitter exponential backoff between connection attempts.
    cache_size : int
        Contexts kept in memory (least recently used dropped first).
    parent_pid : int, optional
        Exit (saying BYE) when this process is no longer our parent: workers started
        by :class:`~hpsearch.LocalProcesses` do not outlive a master that was killed.
    owns_process : bool
        The agent is its process's main loop (``hpsearch-worker``), called on the main
        thread: it handles SIGINT/SIGTERM itself (BYE, then exit 0), and a one-slot
        agent runs short tasks on the main thread. To stop during one of those, it
        exits the process from its keep-alive thread, abandoning the task, as a
        stopping worker abandons the fits of its slot threads. That thread needs the
        GIL: native code that releases it (BLAS, scikit-learn's kernels) does not
        delay a stop; code that holds it delays heartbeats and stops alike.

    Examples
    --------
    >>> agent = WorkerAgent("tcp://127.0.0.1:5555", b"0" * 32, slots=2)  # doctest: +SKIP
    >>> exit_code = agent.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        address: str,
        secret: bytes,
        *,
        slots: int = 1,
        name: str | None = None,
        inner_threads: int | None = None,
        version_overrides: Mapping[str, str] | None = None,
        heartbeat: float = 1.0,
        hello_timeout: float = 5.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 16.0,
        cache_size: int = 2,
        parent_pid: int | None = None,
        owns_process: bool = False,
    ) -> None:
        self.address = address
        self.slots = slots
        self.name = name or f"{host_name()}-{os.getpid()}"
        self.worker_id = uuid.uuid4().hex
        self.heartbeat = heartbeat
        self.hello_timeout = hello_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.cache_size = max(1, cache_size)
        self.parent_pid = parent_pid
        self.owns_process = owns_process
        from .threads import available_cores

        self.inner_threads = inner_threads or max(1, available_cores() // slots)
        self.versions = local_versions(version_overrides)
        self._codec = Codec(secret, MASTER_TYPES)
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._busy = 0  # jobs handed to the slot threads and not reported back
        self._last_duration: float | None = None  # of this search's last task
        self._search_id: int | None = None  # the search the last SEARCH started
        # The main thread owns the socket, and lends it (this lock) to the keep-alive
        # thread only while it runs a task inline.
        self._sock_lock = threading.Lock()
        self._inline_since: float | None = None
        self._finished = threading.Event()
        # Wakes the keep-alive thread: stop requests, and (as the signal module's
        # wake-up fd) SIGINT/SIGTERM even while the main thread is in native code.
        self._alarm_r, self._alarm_w = os.pipe()
        os.set_blocking(self._alarm_r, False)
        os.set_blocking(self._alarm_w, False)
        self._results: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._contexts: collections.OrderedDict[str, EvaluationContext] = collections.OrderedDict()
        self._incoming: _Incoming | None = None
        self._unacked: dict[tuple[int, int, int], dict[str, Any]] = {}
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._inbox: collections.deque[Message] = collections.deque()
        self._cancelled: set[int] = set()
        self._epoch = 0
        self._master_session: str | None = None
        self._master_seq = 0
        self._timeout = 10.0
        self._stop_reason: str | None = None
        self._threads: list[threading.Thread] = []

    # -- public ---------------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the loop to say BYE and exit (safe from a signal handler and any thread)."""
        self._stop_reason = reason
        self._wake()
        self._alarm()

    def _alarm(self) -> None:
        """Wake the keep-alive thread."""
        try:
            os.write(self._alarm_w, b"s")
        except OSError:
            pass  # already alarmed, or closed

    def run(self) -> int:
        """Serve masters until stopped; the process exit code (0 clean, 3 rejected)."""
        from threadpoolctl import threadpool_limits

        # BLAS pools are process-wide; OpenMP's is per thread: this one runs inline tasks.
        limits = threadpool_limits(limits=self.inner_threads)
        restore = self._take_signals() if self.owns_process else None
        self._sock_lock.acquire()
        if self.parent_pid is not None:
            threading.Thread(target=self._watch_parent, name="hpsearch-parent", daemon=True).start()
        keep_alive = None
        if self._inlines:
            keep_alive = threading.Thread(target=self._keep_alive, name="hpsearch-keep-alive", daemon=True)
            keep_alive.start()
        for i in range(self.slots):
            thread = threading.Thread(target=self._slot, name=f"hpsearch-slot-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        attempt = 0
        try:
            while self._stop_reason is None:
                welcomed = self._connect()
                if welcomed:
                    attempt = 0
                    outcome = self._serve()
                    if outcome == "exit":
                        return 0
                else:
                    attempt += 1
                if self._stop_reason is None:
                    delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt))
                    logger.info("reconnecting to %s in %.1f s", self.address, delay)
                    self._sleep(delay)
            self._say_bye()
            return 0
        except VersionMismatchError as exc:
            logger.error("%s", exc)
            raise
        finally:
            self._finished.set()
            if keep_alive is not None:  # it polls the alarm pipe: done before the pipe closes
                self._alarm()
                keep_alive.join(5.0)
            for _ in self._threads:
                self._jobs.put(None)
            self._close_socket()
            self._sock_lock.release()
            self._ctx.term()
            limits.restore_original_limits()
            if restore is not None:
                restore()
            for fd in (self._wake_r, self._wake_w, self._alarm_r, self._alarm_w):
                os.close(fd)

    @property
    def _inlines(self) -> bool:
        """Whether short tasks run on the main thread."""
        return self.owns_process and self.slots == 1

    def _take_signals(self) -> Callable[[], None]:
        """Handle SIGINT/SIGTERM (stop), and have them wake the keep-alive thread at
        once even while the main thread is in native code; returns the undo."""
        import signal

        def handler(signum: int, frame: Any) -> None:
            self.request_stop(signal.Signals(signum).name)

        previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
        old_fd = signal.set_wakeup_fd(self._alarm_w, warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(old_fd)
            for signum, old in previous.items():
                signal.signal(signum, old)

        return restore

    def _keep_alive(self) -> None:
        """Stand in for a main thread busy with a task that runs long inline: send its
        heartbeats, and stop the worker (abandoning the task) on a stop request, a
        signal or SHUTDOWN{exit: true}. Other messages wait in the inbox for the main
        thread, in order."""
        import select
        import signal

        period = self.heartbeat / 2
        alarm = select.poll()
        alarm.register(self._alarm_r, select.POLLIN)
        while not self._finished.is_set():
            alarms = b""
            if alarm.poll(period * 1000):
                try:
                    alarms = os.read(self._alarm_r, 64)
                except BlockingIOError:
                    pass
            since = self._inline_since
            if since is None or (not alarms and self._stop_reason is None and time.monotonic() - since < period):
                continue
            if not self._sock_lock.acquire(blocking=False):
                continue  # the main thread has the socket back
            try:
                if self._inline_since is None or self._sock is None:
                    continue
                # The signal module wrote the numbers of signals whose Python handler has
                # not run yet (the main thread is in native code).
                signals = [signal.Signals(b).name for b in alarms if b in (signal.SIGINT, signal.SIGTERM)]
                stop = self._stop_reason or (signals[0] if signals else None)
                if stop is not None:
                    self._abandon(stop, bye=True)
                if self._master_session is None:
                    continue
                self._read_all()
                if any(m.type == "SHUTDOWN" and m["exit"] for m in self._inbox):
                    self._abandon("the master said so", bye=False)
                if time.monotonic() - self._last_send >= self.heartbeat:
                    self._send("HEARTBEAT")
            finally:
                self._sock_lock.release()

    def _abandon(self, reason: str, bye: bool) -> None:
        """Exit now, from the keep-alive thread, leaving the task on the main thread
        (whatever it started, e.g. a process pool, gets no ``atexit`` clean-up)."""
        try:
            logger.warning("stopping (%s) during a task on the main thread: the task is abandoned", reason)
            if bye:
                self._stop_reason = reason
                self._say_bye()
            self._close_socket()
            self._ctx.term()  # lets the BYE leave (the socket's linger)
            logging.shutdown()
        finally:
            os._exit(0)

    def _watch_parent(self) -> None:
        while self._stop_reason is None:
            if os.getppid() != self.parent_pid:
                logger.warning("the process that started this worker (pid %d) exited; stopping", self.parent_pid)
                self.request_stop("parent exited")
                return
            time.sleep(0.5)

    # -- connection -----------------------------------------------------------------------

    def _open_socket(self) -> None:
        self._close_socket()
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.immediate = 1
        sock.sndhwm = 10000
        sock.rcvhwm = 10000
        sock.connect(self.address)  # raises ZMQError for a bad address
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, _POLLIN)
        self._poller.register(self._wake_r, _POLLIN)
        self._polling = _POLLIN
        self._inbox.clear()
        self._outbox.clear()
        self._codec.new_session()
        self._master_session = None
        self._master_seq = 0
        self._epoch += 1  # tasks queued for the old connection will not run
        self._drop_incoming()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _connect(self) -> bool:
        """Open a socket, say HELLO, wait for WELCOME; False to back off and retry."""
        self._open_socket()
        self._send("HELLO", {
            "worker_id": self.worker_id,
            "name": self.name,
            "host": host_name(),
            "pid": os.getpid(),
            "slots": self.slots,
            "versions": self.versions,
            "contexts": list(self._contexts),
        })
        deadline = time.monotonic() + self.hello_timeout
        while self._stop_reason is None and time.monotonic() < deadline:
            msg = self._poll_once(min(0.2, max(0.0, deadline - time.monotonic())))
            if msg is None:
                continue
            if msg.type == "REJECT":
                raise VersionMismatchError(f"the master rejected this worker: {msg['reason']}")
            if msg.type == "WELCOME":
                self._timeout = float(msg["timeout"])
                logger.info("joined %s as %s", self.address, msg["name"])
                for fields in self._unacked.values():  # results the master may have missed
                    self._send("RESULT", fields)
                return True
            logger.warning("ignoring %s before WELCOME", msg.type)
        return False

    def _serve(self) -> str:
        """Handle messages until the master goes away ("reconnect") or says exit."""
        self._last_recv = time.monotonic()
        while self._stop_reason is None:
            msg = self._poll_once(self.heartbeat / 2)
            now = time.monotonic()
            if msg is not None:
                self._last_recv = now
                outcome = self._handle(msg)
                if outcome is not None:
                    return outcome
            elif now - self._last_recv > self._timeout:
                logger.warning("master silent for %.1f s; reconnecting", now - self._last_recv)
                return "reconnect"
            if now - self._last_send >= self.heartbeat:
                self._send("HEARTBEAT")
        return "stop"

    def _say_bye(self) -> None:
        if self._sock is not None and self._master_session is not None:
            self._send("BYE", {"reason": self._stop_reason or "stopped"})
            # Give the BYE a moment to leave: linger is 0 on purpose elsewhere.
            deadline = time.monotonic() + 1.0
            while self._outbox and time.monotonic() < deadline:
                self._flush()
                time.sleep(0.01)
            try:
                self._sock.setsockopt(zmq.LINGER, 1000)
            except zmq.ZMQError:
                pass
            self._sock.close()
            self._sock = None

    # -- the poll loop ----------------------------------------------------------------------

    def _poll_once(self, timeout: float) -> Message | None:
        """Wait up to ``timeout`` s; forward finished results; return one master message.

        Everything the socket holds is read at once (one poll for a burst of TASKs);
        messages not returned yet wait in the inbox, in order.
        """
        assert self._sock is not None
        if not self._inbox:
            want = _POLLIN | _POLLOUT if self._outbox else _POLLIN
            if want != self._polling:
                self._poller.modify(self._sock, want)
                self._polling = want
            readable = woken = False
            for what, event in self._poller.poll(int(timeout * 1000)):
                if what is self._sock:
                    readable = bool(event & _POLLIN)
                else:
                    woken = True
            if woken:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                self._wake_pending = False  # before draining results: a later one writes again
            if readable:
                self._read_all()
        self._forward_results()
        self._flush()
        return self._inbox.popleft() if self._inbox else None

    def _read_all(self) -> None:
        assert self._sock is not None
        for _ in range(1000):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg = self._check(frames)
            if msg is not None:
                self._inbox.append(msg)

    def _check(self, frames: list[Any]) -> Message | None:
        """The authenticated message from the current master, or None (logged)."""
        try:
            msg = self._codec.decode(frames)
        except ProtocolError as exc:
            logger.warning("dropped a message from the master: %s", exc)
            return None
        to = msg.header.get("to")
        if to != self._codec.session:
            if to is None and msg.type == "REJECT" and self._master_session is None:
                # A master older than protocol 1.2 names no recipient: its REJECT (signed,
                # before any WELCOME) still tells this worker why it cannot join.
                return msg
            # The master's sequence numbers are shared by its workers: a message for
            # another worker (or an earlier session of this one) would pass as new.
            logger.warning("dropped a %s addressed to another worker session", msg.type)
            return None
        if self._master_session is None:
            if msg.type not in ("WELCOME", "REJECT"):
                logger.warning("dropped %s: no WELCOME yet", msg.type)
                return None
            self._master_session = msg.session
        elif msg.session != self._master_session or msg.seq <= self._master_seq:
            if msg.session != self._master_session and msg.type == "SHUTDOWN" and not msg["exit"]:
                # Signed by another master now on this address (restarted with the same
                # token), answering this very session, which it does not know: say HELLO
                # again at once rather than after the silence timeout. Only a reconnect
                # is accepted this way, and once per session (the next has a new id).
                logger.info("another master on %s asks this worker to say HELLO again", self.address)
                return msg
            logger.warning("dropped a replayed or foreign %s from the master", msg.type)
            return None
        self._master_seq = msg.seq
        return msg

    def _handle(self, msg: Message) -> str | None:
        kind = msg.type
        if kind == "TASK":
            self._on_task(msg)
        elif kind == "RESULT_ACK":
            self._forget(msg["acks"])
        elif kind == "SEARCH":
            self._on_search(msg)
        elif kind == "CONTEXT":
            self._on_context(msg)
        elif kind == "CANCEL":
            self._cancelled.add(msg["search"])
            if self._incoming is not None and self._incoming.search == msg["search"]:
                self._drop_incoming()
        elif kind == "SHUTDOWN":
            logger.info("master says %s", msg["reason"])
            if msg["exit"]:
                self._stop_reason = "shutdown"
                return "exit"
            return "reconnect"
        elif kind == "REJECT":
            raise VersionMismatchError(f"the master rejected this worker: {msg['reason']}")
        return None

    def _drop_incoming(self) -> None:
        """Forget a context transfer (done, failed, cancelled or cut): its memory goes."""
        if self._incoming is not None:
            self._incoming.stop.set()
            self._incoming = None

    def _on_search(self, msg: Message) -> None:
        search, cid = msg["search"], msg["context_id"]
        self._cancelled.discard(search)
        self._search_id = search
        self._last_duration = None  # another estimator: its tasks start on the slot thread
        if cid is not None and cid in self._contexts:
            self._contexts.move_to_end(cid)
            logger.info("search %d: context %s already held", search, cid[:12])
            self._send("READY", {"search": search, "context_id": cid, "error": None})
            return
        logger.info("search %d: receiving context %s (%d bytes)", search, (cid or "(id follows)")[:12], msg["nbytes"])
        self._drop_incoming()
        self._incoming = _Incoming(search, cid)
        self._send("NEED", {"search": search, "context_id": cid, "credit": CONTEXT_CREDIT})

    def _on_context(self, msg: Message) -> None:
        incoming = self._incoming
        if incoming is None or msg["search"] != incoming.search:
            logger.warning("dropped a context chunk nobody asked for")
            return
        try:
            last = incoming.add(msg)
            if not last:
                self._send("CREDIT", {"search": incoming.search, "context_id": incoming.context_id, "credit": 1})
                return
            from ..serialization import loads

            context = loads(incoming.frames())
            if not isinstance(context, EvaluationContext):
                raise ProtocolError(f"the context is a {type(context).__name__}, not an EvaluationContext")
        except Exception:
            self._drop_incoming()
            error = clip_text(traceback.format_exc())
            logger.error("could not load the context:\n%s", error)
            self._send("READY", {"search": incoming.search, "context_id": incoming.context_id or "", "error": error})
            return
        self._drop_incoming()
        self._contexts[incoming.context_id] = context
        while len(self._contexts) > self.cache_size:
            self._contexts.popitem(last=False)
        self._send("READY", {"search": incoming.search, "context_id": incoming.context_id, "error": None})

    def _forget(self, acks: Any) -> None:
        """Drop results the master acknowledged (``[search, task_id, attempt]`` each)."""
        for ack in acks if isinstance(acks, list) else ():
            if isinstance(ack, list) and len(ack) == 3:
                self._unacked.pop(tuple(ack), None)

    def _on_task(self, msg: Message) -> None:
        if "acks" in msg.header:
            self._forget(msg["acks"])
        key = (msg["search"], msg["task_id"], msg["attempt"])
        context = self._contexts.get(msg["context_id"])
        try:
            if context is None:
                raise ProtocolError(f"context {msg['context_id'][:12]} is not loaded on this worker")
            from ..serialization import loads

            inline = msg.header.get("params")
            if inline is not None and not (isinstance(inline, list) and all(isinstance(f, bytes) for f in inline)):
                raise ProtocolError("TASK params must be a list of byte strings")
            params = loads(inline if inline is not None else msg.payload)
            if not isinstance(params, dict):
                raise ProtocolError(f"task params are a {type(params).__name__}, not a dict")
        except Exception as exc:
            self._store_result(key, None, clip_text(f"{type(exc).__name__}: {exc}"))
            return
        job = _Job(self._epoch, *key, context, params, msg["fold"])
        if (self._inlines and self._busy == 0 and self._last_duration is not None
                and self._last_duration < INLINE_TASK_SECONDS):
            self._run_inline(job)
        else:
            self._busy += 1
            self._jobs.put(job)

    def _run_inline(self, job: _Job) -> None:
        """Run a short task on this thread: no hand-off to a slot thread and back (two
        thread wake-ups, the main cost of a tiny task). Should it run long, the
        keep-alive thread stands in for this one meanwhile (see ``_keep_alive``)."""
        if self._stop_reason is not None:
            return  # stopping: BYE follows, and the master runs the task elsewhere
        start = time.perf_counter()
        self._sock_lock.release()
        try:
            self._inline_since = time.monotonic()
            if self._stop_reason is not None:  # a stop the keep-alive thread saw too early
                self._alarm()
            message, failure = self._evaluate(job)
        finally:
            self._inline_since = None
            self._sock_lock.acquire()
        self._note_duration(job.search, time.perf_counter() - start, message)
        self._store_result((job.search, job.task_id, job.attempt), message, failure)

    @staticmethod
    def _evaluate(job: _Job) -> tuple[dict[str, Any] | None, str | None]:
        """The task's result message, or the failure text of a bug (``evaluate`` keeps
        fit errors as data)."""
        try:
            return evaluate(job.context, job.params, job.fold).to_message(), None
        except BaseException:  # even SystemExit from a fit: the task fails, the thread lives
            return None, clip_text(traceback.format_exc())

    def _note_duration(self, search: int, seconds: float, message: dict[str, Any] | None) -> None:
        """Remember how long this search's last task took; a failed one (it may have
        failed fast, where the next would not) sends the next task to the slot thread."""
        if search == self._search_id:
            ok = message is not None and message["error"] is None
            self._last_duration = seconds if ok else None

    # -- results ----------------------------------------------------------------------------

    def _slot(self) -> None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.inner_threads, user_api="openmp"):
            while (job := self._jobs.get()) is not None:
                if job.epoch != self._epoch or job.search in self._cancelled:
                    self._results.put((None, None, None, 0.0))  # not run: just "done"
                else:
                    start = time.perf_counter()
                    message, failure = self._evaluate(job)
                    key = (job.search, job.task_id, job.attempt)
                    self._results.put((key, message, failure, time.perf_counter() - start))
                self._wake()

    def _forward_results(self) -> None:
        while True:
            try:
                key, result, failure, duration = self._results.get_nowait()
            except queue.Empty:
                return
            self._busy -= 1
            if key is not None:
                self._note_duration(key[0], duration, result)
                self._store_result(key, result, failure)

    def _store_result(self, key: tuple[int, int, int], result: dict[str, Any] | None,
                      failure: str | None) -> None:
        search, task_id, attempt = key
        fields = {"search": search, "task_id": task_id, "attempt": attempt,
                  "result": result, "failure": failure}
        self._unacked[key] = fields
        if self._master_session is not None:
            self._send("RESULT", fields)

    # -- sending ----------------------------------------------------------------------------

    def _send(self, kind: str, fields: Mapping[str, Any] | None = None, payload: tuple = ()) -> None:
        self._outbox.append(self._codec.encode(kind, fields, payload))
        self._last_send = time.monotonic()
        self._flush()

    def _flush(self) -> None:
        while self._outbox and self._sock is not None:
            try:
                self._sock.send_multipart(self._outbox[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            self._outbox.popleft()

    def _wake(self) -> None:
        if self._wake_pending:  # the loop has a byte to read and will drain the queue
            return
        self._wake_pending = True
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending (or we are shutting down)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._stop_reason is None and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    _last_send = 0.0
    _last_recv = 0.0
    _wake_pending = False
