"""Arbitrary calls on hpsearch's ZeroMQ workers (the joblib backend), without I/O.

A *call* is a pickled function of no argument — a joblib batch — run on one worker
slot, its return value sent back pickled. It is the one place where the master
unpickles what a worker sends, so a pool only sends calls when it trusts its workers
(:class:`~hpsearch.LocalProcesses`, its own children, always does;
``RemoteWorkers(trust_workers=True)`` says so explicitly); a result is only taken
from the session the call was sent to.

The pieces, each free of sockets and threads:

* :class:`Call` and :class:`CallBook`, the master's side (held by the
  :class:`~hpsearch.workers.peers.PeerTable`): calls wait in order, go to the least
  busy peer with room (``slots + 1`` calls each), are sent again with the buffers a
  worker reports missing, are put back in front when their peer is lost (another
  worker runs them, at most :data:`MAX_CALL_ATTEMPTS` in all), and come out as
  :class:`CallDone`.
* Buffers: the large out-of-band buffers of a call's frames (:func:`hpsearch.
  serialization.dumps`: arrays of 64 KiB or more) are named by their content
  (:func:`buffer_id`). A CALL lists every buffer id and carries only the bytes of
  those its peer was not sent before, so a dataset used by many batches (three
  ``cross_val_score`` calls on one ``X``) reaches each worker once.
* :class:`BufferCache`, the worker's side: the buffers it holds, least recently used
  dropped beyond a byte budget; it turns a CALL into the call's frames, or names the
  buffers it lacks (then the master sends them again).
* :func:`result_parts`: a result's pickle cut into pieces that fit a worker message's
  header (workers send headers only).
"""

from __future__ import annotations

import collections
import concurrent.futures
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError

__all__ = ["BufferCache", "Call", "CallBook", "CallDone", "MAX_CALL_ATTEMPTS", "MAX_RESULT_BYTES",
           "RESULT_PART_BYTES", "buffer_id", "dump_result", "result_parts"]

#: Peers a call is tried on before it fails (each lost while running it).
MAX_CALL_ATTEMPTS = 3
#: A worker reporting missing buffers this many times for one call fails it (its cache
#: is smaller than the call's data).
MAX_RESENDS = 3
#: Bytes of a result's pickle per CALL_RESULT message (a worker header is at most 1 MiB).
RESULT_PART_BYTES = 512 * 1024
#: The largest result accepted (its parts are refused beyond this).
MAX_RESULT_BYTES = 4 << 30
#: Buffer ids remembered as sent, per worker session (oldest forgotten: sent again if used).
MAX_HELD_IDS = 65536
#: The most buffer bytes a worker keeps by default (least recently used dropped).
BUFFER_CACHE_BYTES = 2 << 30
_BUFFER_CONTEXT = "hpsearch call buffer id v1"


def buffer_id(buffer: Any) -> str:
    """The content id of one out-of-band buffer (hex BLAKE3, its own key derivation).

    Examples
    --------
    >>> buffer_id(b"abc") == buffer_id(bytearray(b"abc")) != buffer_id(b"abd")
    True
    """
    import blake3

    hasher = blake3.blake3(derive_key_context=_BUFFER_CONTEXT, max_threads=blake3.blake3.AUTO)
    hasher.update(memoryview(buffer).cast("B"))
    return hasher.hexdigest()


def dump_result(value: Any) -> bytes:
    """The pickle of a call's return value (cloudpickle when plain pickle cannot)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - a lambda or a local class: cloudpickle can
        import cloudpickle

        return bytes(cloudpickle.dumps(value, protocol=5))


def result_parts(data: bytes, size: int = RESULT_PART_BYTES) -> list[bytes]:
    """``data`` cut into pieces of at most ``size`` bytes (one, possibly empty, at least).

    Examples
    --------
    >>> result_parts(b"abcde", size=2)
    [b'ab', b'cd', b'e']
    >>> result_parts(b"")
    [b'']
    """
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


# --------------------------------------------------------------------------- master side


@dataclass(eq=False)
class Call:
    """One call: the two head frames of its ``dumps`` and its buffers by content id.

    ``future`` is the caller's (the table only hands it back in :class:`CallDone`).
    """

    call_id: int
    head: list[bytes]
    ids: list[str]
    buffers: dict[str, Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    attempt: int = 0
    resends: int = 0
    session: str | None = None
    parts: list[bytes] = field(default_factory=list)
    nbytes: int = 0  # of the parts received

    @classmethod
    def from_frames(cls, call_id: int, frames: Sequence[Any],
                    future: concurrent.futures.Future | None = None) -> Call:
        """A call from the frames of ``dumps(func)``; its buffers named by content."""
        ids = [buffer_id(frame) for frame in frames[2:]]
        return cls(call_id, [bytes(frames[0]), bytes(frames[1])], ids, dict(zip(ids, frames[2:])),
                   future if future is not None else concurrent.futures.Future())


@dataclass(frozen=True, slots=True)
class CallDone:
    """A call ended: ``data`` is its result's pickle, or ``failure`` says why not."""

    call: Call
    data: bytes | None
    failure: str | None


class CallBook:
    """The master's calls: waiting, running on each peer session, buffers each holds.

    It decides, the :class:`~hpsearch.workers.peers.PeerTable` turns its decisions
    into messages. ``room(session)`` is how many more calls a session takes.
    """

    def __init__(self) -> None:
        self.waiting: collections.deque[Call] = collections.deque()
        self.running: dict[int, Call] = {}
        self.on_peer: dict[str, set[int]] = {}  # session -> ids of its running calls
        self.held: dict[str, dict[str, None]] = {}  # session -> buffer ids it was sent, oldest first
        self.stats: collections.Counter[str] = collections.Counter()
        self.starved_since: float | None = None

    def load(self, session: str) -> int:
        return len(self.on_peer.get(session, ()))

    def assign(self, call: Call, session: str) -> tuple[dict[str, Any], list[Any]]:
        """Give ``call`` to ``session``: the CALL fields and payload (new buffers only)."""
        call.session = session
        call.parts, call.nbytes = [], 0
        self.running[call.call_id] = call
        self.on_peer.setdefault(session, set()).add(call.call_id)
        return self.message(call, session)

    def message(self, call: Call, session: str) -> tuple[dict[str, Any], list[Any]]:
        held = self.held.setdefault(session, {})
        sent = [bid for bid in dict.fromkeys(call.ids) if bid not in held]
        held.update(dict.fromkeys(sent))
        while len(held) > MAX_HELD_IDS:
            del held[next(iter(held))]
        self.stats["calls_sent"] += 1
        self.stats["call_buffers_sent"] += len(sent)
        self.stats["call_buffer_bytes_sent"] += sum(memoryview(call.buffers[b]).nbytes for b in sent)
        fields = {"call": call.call_id, "ids": list(call.ids), "sent": sent}
        return fields, [*call.head, *(call.buffers[bid] for bid in sent)]

    def result(self, session: str, msg: Any) -> tuple[Call | None, CallDone | list[str] | None]:
        """A CALL_RESULT from ``session``: ``(call, done)``, ``(call, missing ids)`` to
        send again, ``(call, None)`` for a part of more to come, ``(None, None)`` for a
        result nobody is waiting for (ignored: only the session sent a call answers it)."""
        call = self.running.get(msg["call"])
        if call is None or call.session != session:
            self.stats["unassigned_call_results"] += 1
            return None, None
        if msg["missing"] is not None:
            missing = [bid for bid in msg["missing"] if isinstance(bid, str)]
            held = self.held.get(session, {})
            for bid in missing:
                held.pop(bid, None)
            call.resends += 1
            if call.resends > MAX_RESENDS:
                return call, self._finish(call, None, (
                    f"the worker dropped the call's buffers {MAX_RESENDS} times: its buffer cache is "
                    "smaller than one call's data"))
            return call, missing
        if msg["failure"] is not None:
            return call, self._finish(call, None, msg["failure"])
        part, parts, data = msg["part"], msg["parts"], msg["data"]
        if not isinstance(data, bytes) or part != len(call.parts) or not 0 <= part < parts \
                or parts > MAX_RESULT_BYTES // RESULT_PART_BYTES + 1:
            raise ProtocolError(f"CALL_RESULT part {part} of {parts} out of order for call {call.call_id}")
        call.parts.append(data)
        call.nbytes += len(data)
        if call.nbytes > MAX_RESULT_BYTES:
            return call, self._finish(call, None, f"the result exceeds {MAX_RESULT_BYTES} bytes")
        if part + 1 < parts:
            return call, None
        data = b"".join(call.parts)
        return call, self._finish(call, data, None)

    def _finish(self, call: Call, data: bytes | None, failure: str | None) -> CallDone:
        self.running.pop(call.call_id, None)
        if call.session is not None:
            self.on_peer.get(call.session, set()).discard(call.call_id)
        call.parts = []
        self.stats["calls_done" if failure is None else "calls_failed"] += 1
        return CallDone(call, data, failure)

    def lost(self, session: str) -> list[CallDone]:
        """``session`` is gone: its calls go back in front (or fail, tried too often)."""
        self.held.pop(session, None)
        failed: list[CallDone] = []
        requeue = []
        for call_id in sorted(self.on_peer.pop(session, ())):
            call = self.running.pop(call_id)
            call.attempt += 1
            call.session = None
            if call.attempt >= MAX_CALL_ATTEMPTS:
                failed.append(self._finish(call, None, f"the call was lost with {MAX_CALL_ATTEMPTS} workers"))
            else:
                requeue.append(call)
        self.waiting.extendleft(reversed(requeue))
        return failed

    def fail_all(self, reason: str) -> list[CallDone]:
        """Every call, waiting or running, fails with ``reason`` (the pool closes)."""
        calls = [*self.waiting, *self.running.values()]
        self.waiting.clear()
        self.running.clear()
        self.on_peer.clear()
        return [self._finish(call, None, reason) for call in calls]

    def starving(self, has_peers: bool, now: float, timeout: float) -> list[CallDone]:
        """Calls waiting with no peer at all for ``timeout`` seconds fail."""
        if has_peers or not self.waiting:
            self.starved_since = None
            return []
        if self.starved_since is None:
            self.starved_since = now
        if now - self.starved_since <= timeout:
            return []
        self.starved_since = None
        calls = list(self.waiting)
        self.waiting.clear()
        return [self._finish(call, None, f"no worker to run the call for {timeout:g} s") for call in calls]


# --------------------------------------------------------------------------- worker side


class BufferCache:
    """A worker's buffers by content id, least recently used dropped beyond ``max_bytes``.

    Examples
    --------
    >>> cache = BufferCache(max_bytes=10)
    >>> cache.frames({"ids": ["a"], "sent": ["a"]}, [b"h", b"p", b"12345"])
    [b'h', b'p', b'12345']
    >>> cache.frames({"ids": ["a", "b"], "sent": []}, [b"h", b"p"])
    ['b']
    """

    def __init__(self, max_bytes: int = BUFFER_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.buffers: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.nbytes = 0

    def add(self, bid: str, buffer: Any) -> None:
        if bid in self.buffers:
            self.buffers.move_to_end(bid)
            return
        self.buffers[bid] = buffer
        self.nbytes += memoryview(buffer).nbytes
        while self.nbytes > self.max_bytes and len(self.buffers) > 1:
            _, old = self.buffers.popitem(last=False)
            self.nbytes -= memoryview(old).nbytes

    def frames(self, header: Any, payload: Sequence[Any]) -> list[Any] | list[str]:
        """A CALL's frames for ``loads`` (head and every buffer, in order), or, as a
        list of ``str``, the ids of the buffers this worker lacks."""
        ids, sent = header["ids"], header["sent"]
        if not all(isinstance(b, str) for b in [*ids, *sent]) or len(payload) != 2 + len(sent):
            raise ProtocolError("CALL ids and sent must be strings, one payload frame per sent buffer")
        for bid, buffer in zip(sent, payload[2:]):
            self.add(bid, buffer)
        buffers = [self.buffers.get(bid) for bid in ids]
        missing = [bid for bid, buffer in zip(ids, buffers) if buffer is None]
        if missing:
            return list(dict.fromkeys(missing))
        for bid in ids:
            self.buffers.move_to_end(bid)
        return [payload[0], payload[1], *buffers]


def iter_result_messages(call_id: int, data: bytes | None, failure: str | None) -> Iterator[dict[str, Any]]:
    """The CALL_RESULT fields for a result's pickle (in parts), or for its failure."""
    if data is None:
        yield {"call": call_id, "part": 0, "parts": 1, "data": None, "failure": failure, "missing": None}
        return
    parts = result_parts(data)
    for index, part in enumerate(parts):
        yield {"call": call_id, "part": index, "parts": len(parts), "data": part, "failure": None,
               "missing": None}
