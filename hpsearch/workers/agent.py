"""The ``hpsearch-worker`` process: one DEALER socket, N slot threads.

The main thread owns the socket and runs one poll loop (the Paranoid Pirate
structure): it answers the master, sends heartbeats every ``heartbeat`` seconds even
while fits run, and reconnects on a fresh socket with full-jitter exponential
backoff when the master is silent past its timeout. Fits run on the slot threads
(:class:`~hpsearch.workers.slots.SlotThreads`, shared with local thread workers),
which never touch the socket: they queue each result and wake the loop
(:class:`~hpsearch.workers.waker.Waker`). Finished results are kept until the master
acknowledges them and are sent again after a reconnect. Contexts arrive through
:class:`~hpsearch.workers.transfer.Assembly` and are cached by content id, so a
second search on the same data does not ship it again.

A worker trusts its master completely (it unpickles the context and the params the
master sends, after checking the signature); the master trusts workers only for
scores (results are msgpack), unless it runs joblib calls on them (CALL: a pickled
function, its large buffers cached here by content id, :mod:`~hpsearch.workers.calls`;
CALL_RESULT: the pickle of its return value, in parts).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from ..errors import ProtocolError, VersionMismatchError
from ..evaluation import EvaluationContext, clip_text
from .calls import BufferCache, dump_result, iter_result_messages
from .protocol import MASTER_TYPES, Codec, MasterFilter, Message, curve_keys, host_name, local_versions
from .slots import SlotThreads, run_task
from .shared import host_id
from .transfer import ContextStore
from .waker import Waker

logger = logging.getLogger(__name__)

__all__ = ["WorkerAgent"]

#: A RESULTS message is closed past about this many bytes of results (a worker's
#: header may hold 1 MiB; an error text is at most 32 KiB), or this many results.
RESULTS_BYTES = 512 * 1024
RESULTS_MAX = 256
#: Seconds a finished result may wait for the loop while slot threads run (the
#: interpreter's switch interval in a worker process).
RESULT_LATENCY = 0.001
#: Seconds between the loop's looks for results while tasks run (a slot thread that
#: finishes a task less than RESULT_LATENCY after the last wake-up does not wake it).
RESULT_POLL = 0.01

# Plain ints: pyzmq's flag enums cost microseconds per operation in the poll loop.
_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)


@dataclass(frozen=True, slots=True)
class _Job:
    epoch: int
    search: int
    task_id: int
    attempt: int
    context: EvaluationContext
    params: dict[str, Any]
    fold: int


@dataclass(frozen=True, slots=True)
class _CallJob:
    epoch: int
    call: int
    frames: list[Any]


_IMMUTABLE = (int, float, str, bool, type(None), complex, bytes)


def _immutable_values(params: dict[str, Any]) -> bool:
    """Whether every value of ``params`` is a plain immutable scalar, which tasks may share."""
    return all(type(value) in _IMMUTABLE or isinstance(value, (np.number, np.bool_)) for value in params.values())


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
    server_key : bytes, optional
        The master's CurveZMQ public key (Z85, from the join token): traffic is
        encrypted; this worker presents the token's worker key.
    parent_pid : int, optional
        Exit (saying BYE) when this process is no longer our parent: workers started
        by :class:`~hpsearch.LocalProcesses` do not outlive a master that was killed.
    owns_process : bool
        The agent is its process's main loop (``hpsearch-worker``), called on the main
        thread: it handles SIGINT/SIGTERM itself (BYE, then exit 0, abandoning the
        fits of its slot threads).

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
        server_key: bytes | None = None,
    ) -> None:
        self.address = address
        self.server_key = server_key
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
        self._secret = secret
        self._codec = Codec(secret, MASTER_TYPES)
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._waker = Waker()  # slot threads -> the socket's thread: a result is queued
        self._slots: SlotThreads[_Job | _CallJob] | None = None
        self._results: queue.SimpleQueue[tuple[tuple[int, int, int], dict[str, Any] | None, str | None]] = \
            queue.SimpleQueue()
        self._store = ContextStore(cache_size)
        self._buffers = BufferCache()  # the calls' large buffers, by content id
        self._call_results: queue.SimpleQueue[tuple[int, int, bytes | None, str | None]] = queue.SimpleQueue()
        self._unacked: dict[tuple[int, int, int], dict[str, Any]] = {}
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._inbox: collections.deque[Message] = collections.deque()
        self._cancelled: set[int] = set()
        self._epoch = 0
        self._filter = MasterFilter(self._codec)
        self._timeout = 10.0
        self._stop_reason: str | None = None
        self._last_send = self._last_recv = 0.0
        self._last_nudge = 0.0  # when a slot thread last woke the loop for a result
        self._outstanding = 0  # tasks queued on the slots whose result the loop has not taken

    # -- public ---------------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the loop to say BYE and exit (safe from a signal handler and any thread)."""
        self._stop_reason = reason
        self._waker.wake()

    def run(self) -> int:
        """Serve masters until stopped; the process exit code (0 clean, 3 rejected)."""
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=self.inner_threads)  # BLAS pools are process-wide
        restore = self._take_signals() if self.owns_process else None
        # A slot thread running tiny tasks of a batch holds the GIL until the interpreter
        # makes it switch: this loop, woken for a result, waits at most that long to send
        # what has finished (a worker that dies then loses less finished work).
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, RESULT_LATENCY))
        if self.parent_pid is not None:
            threading.Thread(target=self._watch_parent, name="hpsearch-parent", daemon=True).start()
        self._slots = SlotThreads(self.slots, self._run_job, name="slot", inner_threads=self.inner_threads)
        attempt = 0
        try:
            while self._stop_reason is None:
                welcomed = self._connect()
                if welcomed:
                    attempt = 0
                    if self._serve() == "exit":
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
            self._slots.close()  # running fits are abandoned: their threads are daemons
            self._close_socket()
            self._ctx.term()
            limits.restore_original_limits()
            sys.setswitchinterval(switch)
            if restore is not None:
                restore()
            self._waker.close()

    def _take_signals(self) -> Callable[[], None]:
        """Handle SIGINT/SIGTERM (stop); returns the undo."""
        import signal

        def handler(signum: int, frame: Any) -> None:
            self.request_stop(signal.Signals(signum).name)

        previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for signum, old in previous.items():
                signal.signal(signum, old)

        return restore

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
        if self.server_key is not None:
            # The token's worker key: the master admits no other (CurveZMQ's short-term
            # keys are still fresh per connection).
            sock.curve_serverkey = self.server_key
            sock.curve_publickey, sock.curve_secretkey = curve_keys(self._secret, "worker")
        sock.connect(self.address)  # raises ZMQError for a bad address
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, _POLLIN)
        self._poller.register(self._waker.fileno(), _POLLIN)
        self._polling = _POLLIN
        self._inbox.clear()
        self._outbox.clear()
        self._codec.new_session()
        self._filter.reset()
        self._epoch += 1  # tasks queued for the old connection will not run
        self._outstanding = 0
        self._store.drop()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _connect(self) -> bool:
        """Open a socket, say HELLO, wait for WELCOME; False to back off and retry."""
        self._open_socket()
        hello = {
            "worker_id": self.worker_id,
            "name": self.name,
            "host": host_name(),
            "pid": os.getpid(),
            "slots": self.slots,
            "versions": self.versions,
            "contexts": list(self._store.contexts),
            # A master with the same one may offer its shared memory (same machine).
            "host_id": host_id(),
        }
        self._send("HELLO", hello)
        challenged = False
        deadline = time.monotonic() + self.hello_timeout
        while self._stop_reason is None and time.monotonic() < deadline:
            msg = self._poll_once(min(0.2, max(0.0, deadline - time.monotonic())))
            if msg is None:
                continue
            if msg.type == "REJECT":
                raise VersionMismatchError(f"the master rejected this worker: {msg['reason']}")
            if msg.type == "CHALLENGE" and not challenged:
                # The master's nonce binds this HELLO to it: one recorded here cannot
                # be replayed to another master, nor again to this one.
                challenged = True
                self._send("HELLO", {**hello, "nonce": msg["nonce"]})
                continue
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
            # While tasks run, a result may be left for the loop to find (see _run_job).
            msg = self._poll_once(RESULT_POLL if self._outstanding > 0 else self.heartbeat / 2)
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
        if self._sock is not None and self._filter.master is not None:
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
                self._waker.drain()  # before draining results: a later one wakes again
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
        return msg if self._filter.accept(msg) else None

    def _handle(self, msg: Message) -> str | None:
        kind = msg.type
        if kind == "TASK":
            self._on_task(msg)
        elif kind == "CALL":
            self._on_call(msg)
        elif kind == "TASKS":
            self._on_tasks(msg)
        elif kind == "RESULT_ACK":
            self._forget(msg["acks"])
        elif kind == "SEARCH":
            self._cancelled.discard(msg["search"])
            self._send(*self._store.on_search(msg))
        elif kind == "CONTEXT":
            reply = self._store.on_context(msg)
            if reply is not None:
                self._send(*reply)
        elif kind == "CANCEL":
            self._cancelled.add(msg["search"])
            self._outstanding = 0  # its queued tasks will not run (a running one may still report)
            self._store.cancel(msg["search"])
        elif kind == "SHUTDOWN":
            logger.info("master says %s", msg["reason"])
            if msg["exit"]:
                self._stop_reason = "shutdown"
                return "exit"
            return "reconnect"
        elif kind == "REJECT":
            raise VersionMismatchError(f"the master rejected this worker: {msg['reason']}")
        return None

    def _forget(self, acks: Any) -> None:
        """Drop results the master acknowledged (``[search, task_id, attempt]`` each)."""
        for ack in acks if isinstance(acks, list) else ():
            if isinstance(ack, list) and len(ack) == 3:
                self._unacked.pop(tuple(ack), None)

    def _on_task(self, msg: Message) -> None:
        if "acks" in msg.header:
            self._forget(msg["acks"])
        key = (msg["search"], msg["task_id"], msg["attempt"])
        context = self._store.contexts.get(msg["context_id"])
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
        assert self._slots is not None  # run() started them
        self._outstanding += 1
        self._slots.put(_Job(self._epoch, *key, context, params, msg["fold"]))

    def _on_call(self, msg: Message) -> None:
        try:
            frames = self._buffers.frames(msg.header, msg.payload)
        except ProtocolError as exc:
            self._send_call_result(msg["call"], None, str(exc))
            return
        if frames and isinstance(frames[0], str):  # evicted since the master sent them
            self._send("CALL_RESULT", {"call": msg["call"], "part": 0, "parts": 1, "data": None,
                                       "failure": None, "missing": frames})
            return
        assert self._slots is not None  # run() started them
        self._slots.put(_CallJob(self._epoch, msg["call"], frames))

    def _run_call(self, job: _CallJob) -> None:
        """On a slot thread: unpickle and run the call, queue its pickled result."""
        import traceback

        from ..serialization import loads

        data: bytes | None = None
        failure: str | None = None
        try:
            data = dump_result(loads(job.frames)())
        except BaseException:  # even SystemExit: the call fails, the thread lives
            failure = clip_text(traceback.format_exc())
        self._call_results.put((job.epoch, job.call, data, failure))
        self._waker.wake()

    def _send_call_result(self, call: int, data: bytes | None, failure: str | None) -> None:
        for fields in iter_result_messages(call, data, failure):
            self._send("CALL_RESULT", fields)
    def _on_tasks(self, msg: Message) -> None:
        """Several tasks (protocol 1.4): queued one by one, in order, as TASK would."""
        if "acks" in msg.header:
            self._forget(msg["acks"])
        from ..serialization import loads

        context = self._store.contexts.get(msg["context_id"])
        assert self._slots is not None  # run() started them
        # The folds of a candidate follow each other with the same params bytes: they
        # are unpickled once, and each task gets its own dict (of immutable values only).
        last: tuple[Any, dict[str, Any]] | None = None
        search = msg["search"]
        for entry in msg["tasks"]:  # plain checks, no generator: this runs once per task
            if not (isinstance(entry, list) and len(entry) == 4
                    and type(entry[0]) is int and type(entry[1]) is int and type(entry[2]) is int):
                logger.warning("dropped a malformed task entry of a TASKS message")
                continue
            task_id, attempt, fold, inline = entry
            key = (search, task_id, attempt)
            try:
                if context is None:
                    raise ProtocolError(f"context {msg['context_id'][:12]} is not loaded on this worker")
                if last is not None and last[0] == inline:  # the same checked bytes as the task before
                    params = dict(last[1])
                else:
                    if not (isinstance(inline, list) and all(isinstance(f, bytes) for f in inline)):
                        raise ProtocolError("TASKS params must be lists of byte strings")
                    params = loads(inline)
                    if not isinstance(params, dict):
                        raise ProtocolError(f"task params are a {type(params).__name__}, not a dict")
                    last = (inline, dict(params)) if _immutable_values(params) else None
            except Exception as exc:
                self._store_result(key, None, clip_text(f"{type(exc).__name__}: {exc}"))
                continue
            self._outstanding += 1
            self._slots.put(_Job(self._epoch, *key, context, params, fold))

    # -- results ----------------------------------------------------------------------------

    def _run_job(self, job: _Job | _CallJob) -> None:
        """On a slot thread: run the job, queue its result for the socket's thread."""
        if isinstance(job, _CallJob):
            if job.epoch == self._epoch:  # else queued for an old connection: the master requeued it
                self._run_call(job)
            return
        key = (job.search, job.task_id, job.attempt)
        if job.epoch != self._epoch or job.search in self._cancelled:
            return  # queued for an old connection, or cancelled: the master runs it elsewhere
        result = run_task(job.context, job.params, job.fold)
        if isinstance(result, str):
            self._results.put((key, None, result))
        else:
            self._results.put((key, result.to_message(), None))
        # The loop is woken at most every RESULT_LATENCY while more tasks are queued (it
        # finds the results between on its own, within RESULT_POLL), and without giving
        # up the GIL: it runs at the next switch and sends every result finished by
        # then in one RESULTS. A slot about to wait for work wakes it at once.
        now = time.monotonic()
        assert self._slots is not None
        if now - self._last_nudge >= RESULT_LATENCY or not self._slots.queued():
            self._last_nudge = now
            self._waker.nudge()

    def _forward_results(self) -> None:
        """Send the results the slot threads finished since the last pass: one RESULT,
        or RESULTS for several (those of one search, up to ``RESULTS_BYTES`` each)."""
        while True:  # calls' results: only for the connection they came on (else requeued)
            try:
                epoch, call, data, failure = self._call_results.get_nowait()
            except queue.Empty:
                break
            if epoch == self._epoch and self._filter.master is not None:
                self._send_call_result(call, data, failure)
        batch: list[dict[str, Any]] = []
        size = 0
        while True:
            try:
                key, result, failure = self._results.get_nowait()
            except queue.Empty:
                break
            self._outstanding = max(0, self._outstanding - 1)
            fields = self._store_result(key, result, failure, send=False)
            if batch and (fields["search"] != batch[0]["search"] or size >= RESULTS_BYTES
                          or len(batch) >= RESULTS_MAX):
                self._send_results(batch)
                batch, size = [], 0
            batch.append(fields)
            size += 256 + len(failure or "") + len((result or {}).get("error") or "")
        if batch:
            self._send_results(batch)

    def _send_results(self, batch: list[dict[str, Any]]) -> None:
        if self._filter.master is None:
            return
        if len(batch) == 1:
            self._send("RESULT", batch[0])
            return
        self._send("RESULTS", {"search": batch[0]["search"], "results": [
            [f["task_id"], f["attempt"], f["result"], f["failure"]] for f in batch
        ]})

    def _store_result(self, key: tuple[int, int, int], result: dict[str, Any] | None,
                      failure: str | None, *, send: bool = True) -> dict[str, Any]:
        search, task_id, attempt = key
        fields = {"search": search, "task_id": task_id, "attempt": attempt,
                  "result": result, "failure": failure}
        self._unacked[key] = fields
        if send and self._filter.master is not None:
            self._send("RESULT", fields)
        return fields

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

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._stop_reason is None and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
