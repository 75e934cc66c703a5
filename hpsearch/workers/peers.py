"""The master's per-worker protocol state, without I/O: :class:`PeerTable`.

The table takes decoded, authenticated worker messages and the time, and returns
what to do: :class:`Send` instructions (a message for one worker session) and the
scheduler events of :mod:`hpsearch.workers.base`, in the order they must happen.
It never touches a socket, a thread or a clock, so its rules (sessions and replays,
context offers, acknowledgements, liveness) are tested in virtual time; the I/O
thread of :class:`~hpsearch.workers.remote.RemoteWorkers` only decodes, calls the
table, and carries its answers out.

Each connected worker session is a :class:`Peer` whose :class:`PeerState` tracks
the current search::

    HELLO ──► IDLE ──(search offered)──► ASKED ──NEED──► SENDING ──READY──► READY
               │  └─(may hold it; id not known yet)─► WAITING ──sealed──► ASKED
               └──────────────── end of search ◄── any state; READY(error) ► FAILED

A peer leaves the table on BYE, silence, a dead process, an unreachable route, a
second HELLO on its route or from its worker; a READY peer leaving is a
``WorkerLost``, and its session is remembered so that a result it still sends is
accepted for the search it served.
"""

from __future__ import annotations

import collections
import enum
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import NoWorkersError, ProtocolError
from ..evaluation import FoldResult
from .base import PoolFailed, Task, TaskFailed, TaskFinished, Worker, WorkerJoined, WorkerLost
from .protocol import Message, version_mismatch
from .transfer import Offer, Upload

logger = logging.getLogger(__name__)

__all__ = ["MAX_ACKS", "INLINE_PARAMS_BYTES", "Peer", "PeerState", "PeerTable", "Send", "Output"]

#: Acknowledgements held for a worker before they go out on their own.
MAX_ACKS = 256
#: Serialized params up to this size (and without out-of-band buffers) ride in the
#: TASK header as ``params: [header, pickle]`` instead of two payload frames.
INLINE_PARAMS_BYTES = 64 * 1024


class PeerState(enum.Enum):
    """Where a worker session stands in the current search."""

    IDLE = "idle"  # connected; no search offered
    WAITING = "waiting"  # may hold the context: offered once its content id is known
    ASKED = "asked"  # SEARCH sent: READY (held) or NEED (send it) expected
    SENDING = "sending"  # context chunks flowing against the worker's credit
    READY = "ready"  # holds the context: takes tasks
    FAILED = "failed"  # could not load the context: not used in this search


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``kind`` to the worker session ``to`` at ``route``."""

    route: bytes
    to: str
    kind: str
    fields: Mapping[str, Any] | None = None
    payload: Any = ()


Output = Union[Send, WorkerJoined, TaskFinished, TaskFailed, WorkerLost, PoolFailed]


@dataclass
class Peer:
    """One worker session, as the master knows it."""

    route: bytes
    session: str
    worker_id: str
    name: str
    slots: int
    pid: int
    host: str
    worker: Worker
    last_recv: float
    last_send: float = 0.0
    seq_in: int = 0
    contexts: set[str] = field(default_factory=set)
    state: PeerState = PeerState.IDLE
    upload: Upload = field(default_factory=Upload)
    acks: list[list[int]] = field(default_factory=list)  # results recorded, not yet acknowledged


@dataclass
class _Search:
    offer: Offer
    joined: int = 0
    no_workers_since: float | None = None


class PeerTable:
    """Every worker session of one master, and the search it serves.

    Parameters
    ----------
    versions : mapping
        The master's versions; a HELLO whose versions do not match gets a REJECT.
    make_worker : callable
        ``make_worker(session, name, slots)``: the scheduler's handle on a peer.
    heartbeat, heartbeat_timeout : float
        Seconds of quiet before a HEARTBEAT goes out; of silence before a peer is lost.
    min_workers, join_timeout : int, float
        A search that had ``min_workers`` and then none at all for ``join_timeout``
        seconds fails with :class:`~hpsearch.errors.NoWorkersError`.

    Examples
    --------
    >>> from hpsearch.workers.protocol import local_versions
    >>> table = PeerTable(local_versions(), lambda session, name, slots: name)
    >>> table.tick(now=0.0)
    []
    """

    def __init__(
        self,
        versions: Mapping[str, str],
        make_worker: Callable[[str, str, int], Any],
        *,
        heartbeat: float = 1.0,
        heartbeat_timeout: float = 30.0,
        min_workers: int = 1,
        join_timeout: float = 300.0,
    ) -> None:
        self.versions = dict(versions)
        self.make_worker = make_worker
        self.heartbeat = heartbeat
        self.heartbeat_timeout = heartbeat_timeout
        self.min_workers = min_workers
        self.join_timeout = join_timeout
        #: Appended to the error of a search that lost every worker (how to start one).
        self.hint = ""
        self.stats: collections.Counter[str] = collections.Counter()
        self.peers: dict[str, Peer] = {}  # active sessions
        self.search: _Search | None = None
        self._by_route: dict[bytes, str] = {}
        self._by_worker: dict[str, str] = {}  # worker id -> its active session
        self._names: set[str] = set()  # of the active sessions
        self._seen: dict[str, int] = {}  # every session ever accepted -> last seq
        self._closed: dict[str, tuple[str, int]] = {}  # lost READY session -> (name, search)

    # -- messages ---------------------------------------------------------------------------

    def receive(self, route: bytes, msg: Message, now: float) -> list[Output]:
        """Handle one authenticated worker message; ProtocolError means drop and log it."""
        if msg.type == "HELLO":
            return self._on_hello(route, msg, now)
        peer = self.peers.get(msg.session)
        if peer is None:
            return self._from_unknown(route, msg)
        if msg.seq <= peer.seq_in:
            raise ProtocolError(f"replayed {msg.type} (seq {msg.seq} <= {peer.seq_in}) from {peer.name}")
        if peer.route != route:
            # Signed and newer than anything seen: the worker itself, reconnected by
            # ZeroMQ after a network blip (a new connection gets a new routing id).
            logger.info("worker %s reconnected", peer.name)
            self._by_route.pop(peer.route, None)
            peer.route = route
            self._by_route[route] = peer.session
        peer.seq_in = self._seen[msg.session] = msg.seq
        peer.last_recv = now
        handler = self._handlers.get(msg.type)
        return handler(self, peer, msg, now) if handler is not None else []

    def _from_unknown(self, route: bytes, msg: Message) -> list[Output]:
        out: list[Output] = []
        last = self._seen.get(msg.session)
        if last is not None and msg.seq <= last:
            raise ProtocolError(f"replayed {msg.type} of a closed session")
        if last is not None:
            self._seen[msg.session] = msg.seq
            closed = self._closed.get(msg.session)
            search = self.search
            if msg.type == "RESULT" and closed is not None and search is not None and search.offer.search == closed[1]:
                out += self._result(route, msg.session, closed[0], msg, None)  # lost, yet it finished
        elif msg.type != "BYE":
            logger.info("a %s from unknown session %s; asking it to say HELLO again", msg.type, msg.session)
        if msg.type != "BYE":
            # Addressed to the session it answers: only that worker acts on it, and only
            # while that session lasts (a replay cannot keep a worker reconnecting).
            out.append(Send(route, msg.session, "SHUTDOWN", {"exit": False, "reason": "unknown session; say HELLO again"}))
        return out

    def _on_hello(self, route: bytes, msg: Message, now: float) -> list[Output]:
        if msg.session in self._seen:
            raise ProtocolError(f"replayed HELLO (session {msg.session} already seen)")
        self._seen[msg.session] = msg.seq
        header = msg.header
        mismatch = version_mismatch(self.versions, header["versions"])
        if mismatch is not None:
            logger.warning("rejected worker %s (%s): %s", header["name"], header["host"], mismatch)
            self.stats["rejected"] += 1
            return [Send(route, msg.session, "REJECT", {"reason": mismatch})]
        if header["slots"] < 1 or not all(isinstance(c, str) for c in header["contexts"]):
            raise ProtocolError("HELLO with bad slots or contexts")
        out: list[Output] = []
        old_session = self._by_route.get(route)
        if old_session is not None:
            out += self.lose(old_session, "said HELLO again")
        other = self._by_worker.get(header["worker_id"])
        if other is not None:
            out += self.lose(other, "reconnected")
        name = base = header["name"][:100] or "worker"
        k = 1
        while name in self._names:
            k += 1
            name = f"{base}#{k}"
        worker = self.make_worker(msg.session, name, header["slots"])
        peer = Peer(route, msg.session, header["worker_id"], name, header["slots"], header["pid"],
                    header["host"], worker, last_recv=now, seq_in=msg.seq, contexts=set(header["contexts"]))
        self.peers[msg.session] = peer
        self._by_route[route] = msg.session
        self._by_worker[peer.worker_id] = msg.session
        self._names.add(name)
        self.stats["hellos"] += 1
        logger.info("worker %s joined from %s (pid %d, %d slot(s))", name, peer.host, peer.pid, peer.slots)
        out.append(self._send(peer, now, "WELCOME", {"name": name, "heartbeat": self.heartbeat,
                                                      "timeout": self.heartbeat_timeout}))
        return out + self._offer(peer, now)

    def _current(self, peer: Peer, msg: Message, *states: PeerState) -> _Search | None:
        """The search, if ``msg`` is about it and ``peer`` is in one of ``states``."""
        search = self.search
        if search is None or msg["search"] != search.offer.search or peer.state not in states:
            return None
        return search

    def _on_ready(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        search = self._current(peer, msg, PeerState.ASKED, PeerState.SENDING)
        if search is None:
            return []
        if msg["error"] is not None:
            peer.state = PeerState.FAILED
            logger.error("worker %s could not load the context; it will not be used:\n%s", peer.name, msg["error"])
            return []
        if msg["context_id"] != search.offer.context_id:
            raise ProtocolError(f"READY from {peer.name} names context {msg['context_id']}, not {search.offer.context_id}")
        peer.state = PeerState.READY
        peer.contexts.add(msg["context_id"])
        search.joined += 1
        return [WorkerJoined(peer.worker)]

    def _on_need(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        search = self._current(peer, msg, PeerState.ASKED)
        if search is None:
            return []
        peer.state = PeerState.SENDING
        peer.upload = Upload()
        peer.upload.grant(max(1, msg["credit"]))
        self.stats["contexts_sent"] += 1
        self.stats["context_bytes_sent"] += search.offer.nbytes
        return self._pump(peer, search.offer, now)

    def _on_credit(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        search = self._current(peer, msg, PeerState.SENDING)
        if search is None:
            return []
        peer.upload.grant(msg["credit"])
        return self._pump(peer, search.offer, now)

    def _on_result(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        # Accepted whatever the peer's state: a worker re-offering results after a
        # reconnect has not said READY yet. The search id (random per search) ties the
        # result to this search; the scheduler keeps the first result of each task.
        out: list[Output] = []
        if len(peer.acks) >= MAX_ACKS:  # the scheduler has had all of these
            out.append(self._acks(peer, now))
        return out + self._result(peer.route, peer.session, peer.name, msg, peer)

    def _result(self, route: bytes, session: str, name: str, msg: Message, peer: Peer | None) -> list[Output]:
        search = self.search
        out: list[Output] = []
        if search is None or msg["search"] != search.offer.search:
            self.stats["stale_results"] += 1
        elif msg["failure"] is not None:
            out.append(TaskFailed(name, msg["task_id"], msg["attempt"], msg["failure"]))
        else:
            try:
                result = FoldResult.from_message(msg["result"])
            except (ValueError, TypeError, KeyError) as exc:
                raise ProtocolError(f"invalid result from {name}: {exc}") from None
            out.append(TaskFinished(name, msg["task_id"], msg["attempt"], result))
        self.stats["results"] += len(out)
        # Acks ride on the worker's next TASK, which the scheduler usually sends while
        # it handles this very result (else they leave on their own within the
        # housekeeping period): one message less per task for both sides to sign,
        # send, wake up for and check. An ack never leaves before its result's event.
        ack = [msg["search"], msg["task_id"], msg["attempt"]]
        if peer is None:  # a closed session: acknowledged at once, on its own
            out.append(Send(route, session, "RESULT_ACK", {"acks": [ack]}))
        else:
            peer.acks.append(ack)
        return out

    def _on_bye(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        return self.lose(peer.session, f"left: {msg['reason']}")

    _handlers: dict[str, Callable[[PeerTable, Peer, Message, float], list[Output]]] = {
        "READY": _on_ready,
        "NEED": _on_need,
        "CREDIT": _on_credit,
        "RESULT": _on_result,
        "BYE": _on_bye,
    }

    # -- the search -------------------------------------------------------------------------

    def start_search(self, offer: Offer, now: float) -> list[Output]:
        """Serve a new search (ending the current one): offer its context to every peer."""
        out = self.end_search(now)
        self.search = _Search(offer)
        for peer in list(self.peers.values()):
            out += self._offer(peer, now)
        return out

    def seal(self, search_id: int, context_id: str, now: float) -> list[Output]:
        """The context's id is known: ask the waiting peers, finish the transfers."""
        search = self.search
        if search is None or search.offer.search != search_id:
            return []
        search.offer.context_id = context_id
        out: list[Output] = []
        for peer in list(self.peers.values()):
            if peer.state is PeerState.WAITING:
                out += self._offer(peer, now)
            elif peer.state is PeerState.SENDING:
                out += self._pump(peer, search.offer, now)
        return out

    def end_search(self, now: float) -> list[Output]:
        """No search any more: acknowledge what came in, tell every peer to stop its tasks."""
        search = self.search
        if search is None:
            return []
        out: list[Output] = []
        for peer in self.peers.values():
            peer.state = PeerState.IDLE
            if peer.acks:
                out.append(self._acks(peer, now))
            out.append(self._send(peer, now, "CANCEL", {"search": search.offer.search}))
        self.search = None
        return out

    def submit(self, session: str, task: Task, now: float) -> list[Output]:
        """The TASK for ``task`` to ``session``, or a ``TaskFailed`` if it cannot travel."""
        from ..serialization import dumps

        peer = self.peers.get(session)
        search = self.search
        if peer is None or search is None or search.offer.context_id is None:
            return []  # the worker is gone: the scheduler requeues its tasks on WorkerLost
        try:
            frames: list[Any] = dumps(task.params)
        except Exception as exc:  # the task cannot travel: it fails as data, nothing hangs
            logger.error("task %d cannot be sent to %s: %r", task.task_id, peer.name, exc)
            return [TaskFailed(peer.name, task.task_id, task.attempt,
                               f"the params could not be serialized: {type(exc).__name__}: {exc}")]
        fields: dict[str, Any] = {"search": search.offer.search, "task_id": task.task_id,
                                  "attempt": task.attempt, "context_id": search.offer.context_id,
                                  "fold": task.fold}
        if peer.acks:
            fields["acks"], peer.acks = peer.acks, []
        self.stats["tasks_sent"] += 1
        self.stats[f"tasks_to:{peer.name}"] += 1
        if len(frames) == 2 and sum(memoryview(f).nbytes for f in frames) <= INLINE_PARAMS_BYTES:
            # Usual params (a few numbers and strings) travel inside the signed header:
            # two frames fewer, each a pyzmq call that gives up the GIL.
            fields["params"] = [bytes(f) for f in frames]
            frames = []
        return [self._send(peer, now, "TASK", fields, frames)]

    def _offer(self, peer: Peer, now: float) -> list[Output]:
        search = self.search
        if search is None:
            return []
        if search.offer.context_id is None and peer.contexts:
            peer.state = PeerState.WAITING
            return []
        peer.state = PeerState.ASKED
        return [self._send(peer, now, "SEARCH", search.offer.search_fields())]

    def _pump(self, peer: Peer, offer: Offer, now: float) -> list[Output]:
        # Signed by length: the worker checks the bytes against the content id.
        return [self._send(peer, now, "CONTEXT", fields, chunk) for fields, chunk in peer.upload.chunks(offer)]

    # -- membership and time ----------------------------------------------------------------

    def lose(self, session: str, reason: str) -> list[Output]:
        """Forget a peer (its connection is gone, or it left); WorkerLost if it was READY."""
        peer = self.peers.pop(session, None)
        if peer is None:
            return []
        self._by_route.pop(peer.route, None)
        self._by_worker.pop(peer.worker_id, None)
        self._names.discard(peer.name)
        self.stats["lost"] += 1
        logger.warning("worker %s lost: %s", peer.name, reason)
        search = self.search
        if search is None or peer.state is not PeerState.READY:
            return []
        self._closed[peer.session] = (peer.name, search.offer.search)
        return [WorkerLost(peer.name, reason)]

    def tick(self, now: float, dead_pids: Collection[int] = (), busy: Collection[str] = ()) -> list[Output]:
        """Housekeeping: lose silent or dead peers, flush acks, heartbeat quiet ones.

        ``busy`` names sessions whose earlier messages are still waiting to leave
        (no heartbeat needed behind them).
        """
        out: list[Output] = []
        for peer in list(self.peers.values()):
            if peer.pid in dead_pids:
                out += self.lose(peer.session, f"process {peer.pid} exited")
            elif now - peer.last_recv > self.heartbeat_timeout:
                out += self.lose(peer.session, f"silent for {now - peer.last_recv:.1f} s")
            elif peer.acks:
                out.append(self._acks(peer, now))
            elif now - peer.last_send >= self.heartbeat and peer.session not in busy:
                out.append(self._send(peer, now, "HEARTBEAT"))
        search = self.search
        if search is not None and search.joined >= self.min_workers:
            if any(p.state is PeerState.READY for p in self.peers.values()):
                search.no_workers_since = None
            elif search.no_workers_since is None:
                search.no_workers_since = now
            elif now - search.no_workers_since > self.join_timeout:
                search.no_workers_since = None
                out.append(PoolFailed(NoWorkersError(
                    f"every remote worker was lost and none joined for {self.join_timeout:g} s.{self.hint}")))
        return out

    def goodbye(self, now: float, exit: bool, reason: str) -> list[Output]:
        """End the search and send every peer SHUTDOWN; the table is empty afterwards."""
        out = self.end_search(now)
        out += [self._send(peer, now, "SHUTDOWN", {"exit": exit, "reason": reason}) for peer in self.peers.values()]
        self.peers.clear()
        self._by_route.clear()
        self._by_worker.clear()
        self._names.clear()
        return out

    def _acks(self, peer: Peer, now: float) -> Send:
        acks, peer.acks = peer.acks, []
        return self._send(peer, now, "RESULT_ACK", {"acks": acks})

    @staticmethod
    def _send(peer: Peer, now: float, kind: str, fields: Mapping[str, Any] | None = None, payload: Any = ()) -> Send:
        peer.last_send = now
        return Send(peer.route, peer.session, kind, fields, payload)
