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

    HELLO ─► CHALLENGE ─► HELLO{nonce} ─► IDLE ─(search offered)─► ASKED ─NEED─► QUEUED
               │  └─(may hold it; id not known yet)─► WAITING ──sealed──► ASKED     │ (turn)
               │                                          READY ◄──READY── SENDING ◄┘
               └──────────────── end of search ◄── any state; READY(error) ► FAILED

A HELLO is bound to this master by a nonce it sent for that session (one use), so a
HELLO recorded elsewhere evicts nobody. A RESULT counts only for a task sent to that
session (or to an earlier session of the same worker), once. Slots are capped, at
most ``max_uploads`` context transfers run at once and each must keep moving, and
per-session state (challenges, closed sessions) expires: the table stays bounded
whatever token holders send.

A peer leaves the table on BYE, silence, a dead process, an unreachable route, a
stalled transfer, a second HELLO on its route or from its worker; a READY peer
leaving is a ``WorkerLost``, and its session is remembered for a while so that a
result it still sends for a task it held is accepted for the search it served.
"""

from __future__ import annotations

import collections
import enum
import logging
import hmac
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import NoWorkersError, ProtocolError
from ..evaluation import FoldResult
from .base import PoolFailed, Results, Task, TaskFailed, TaskFinished, Worker, WorkerJoined, WorkerLost
from .calls import Call, CallBook, CallDone
from .protocol import Message, version_mismatch
from .transfer import Offer, Upload

logger = logging.getLogger(__name__)

__all__ = ["MAX_ACKS", "MAX_SLOTS", "MAX_UPLOADS", "INLINE_PARAMS_BYTES", "Peer", "PeerState", "PeerTable",
           "Send", "Output"]

#: Acknowledgements held for a worker before they go out on their own.
MAX_ACKS = 256
#: Serialized params up to this size (and without out-of-band buffers) ride in the
#: TASK header as ``params: [header, pickle]`` instead of two payload frames.
INLINE_PARAMS_BYTES = 64 * 1024
#: A TASKS message is closed once its tasks' params pass this many bytes (its header
#: stays far below the 1 MiB a header may hold).
BATCH_BYTES = 256 * 1024
#: Most tasks in a TASKS message, and results in a RESULTS message.
MAX_BATCH = 256
#: The most slots a worker may announce; more are counted as this many.
MAX_SLOTS = 256
#: Context transfers in flight at once; further NEEDs wait their turn.
MAX_UPLOADS = 4
#: Challenges outstanding at once (HELLOs answered, not yet answered back); oldest dropped.
MAX_CHALLENGES = 1024
#: Closed sessions remembered (for a late result, and to refuse their replays); oldest dropped.
MAX_CLOSED = 4096


class PeerState(enum.Enum):
    """Where a worker session stands in the current search."""

    IDLE = "idle"  # connected; no search offered
    WAITING = "waiting"  # may hold the context: offered once its content id is known
    ASKED = "asked"  # SEARCH sent: READY (held) or NEED (send it) expected
    QUEUED = "queued"  # NEED received; waits for one of the MAX_UPLOADS transfer turns
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


Output = Union[Send, WorkerJoined, TaskFinished, TaskFailed, Results, WorkerLost, PoolFailed, CallDone]


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
    assigned: set[tuple[int, int]] = field(default_factory=set)  # (task_id, attempt) sent, no result yet
    credit: int = 0  # asked for by a queued NEED
    host_id: str | None = None  # what HELLO said: equal to the master's, it may map shared memory
    shared: bool = False  # its NEED said it maps the search's segment: only the other frames travel
    progress_at: float = 0.0  # SENDING: when the transfer last moved (NEED, CREDIT)


@dataclass
class _Closed:
    """A session that left: refuses its replays; takes a late result of a task it held."""

    name: str
    worker_id: str
    search: int | None
    seq: int
    since: float
    assigned: set[tuple[int, int]]


@dataclass
class _Search:
    offer: Offer
    joined: int = 0
    no_workers_since: float | None = None
    waiting: collections.deque[str] = field(default_factory=collections.deque)  # QUEUED sessions, in order
    sending: set[str] = field(default_factory=set)  # SENDING sessions (at most max_uploads)


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
    max_slots, max_uploads : int
        Slots counted at most per worker (:data:`MAX_SLOTS`); context transfers in
        flight at once (:data:`MAX_UPLOADS`).
    session_ttl : float
        Seconds a closed session is remembered (default ``max(600, 4 * heartbeat_timeout)``);
        at most :data:`MAX_CLOSED` are.
    host_id : str, optional
        The master's :func:`~hpsearch.workers.shared.host_id`: a peer whose HELLO names
        the same one is offered the search's shared-memory segment, if it has one.
        None (the default): no peer is.

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
        max_slots: int = MAX_SLOTS,
        max_uploads: int = MAX_UPLOADS,
        session_ttl: float | None = None,
        host_id: str | None = None,
    ) -> None:
        self.versions = dict(versions)
        self.make_worker = make_worker
        self.heartbeat = heartbeat
        self.heartbeat_timeout = heartbeat_timeout
        self.min_workers = min_workers
        self.join_timeout = join_timeout
        self.max_slots = max_slots
        self.max_uploads = max_uploads
        self.session_ttl = max(600.0, 4 * heartbeat_timeout) if session_ttl is None else session_ttl
        self.host_id = host_id
        #: Appended to the error of a search that lost every worker (how to start one).
        self.hint = ""
        self.stats: collections.Counter[str] = collections.Counter()
        self.peers: dict[str, Peer] = {}  # active sessions
        self.search: _Search | None = None
        self._by_route: dict[bytes, str] = {}
        self._by_worker: dict[str, str] = {}  # worker id -> its active session
        self._names: set[str] = set()  # of the active sessions
        # HELLO answered with CHALLENGE: session -> (nonce, when); consumed by the bound HELLO.
        self._challenges: collections.OrderedDict[str, tuple[str, float, int]] = collections.OrderedDict()
        self._closed: collections.OrderedDict[str, _Closed] = collections.OrderedDict()
        #: Calls (the joblib backend): they run on any connected peer, search or not.
        self.calls = CallBook()
        self.calls.stats = self.stats

    def knows_route(self, route: bytes) -> bool:
        """Whether ``route`` is a connected worker session's (its handshake completed)."""
        return route in self._by_route

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
        peer.seq_in = msg.seq
        peer.last_recv = now
        handler = self._handlers.get(msg.type)
        return handler(self, peer, msg, now) if handler is not None else []

    def _from_unknown(self, route: bytes, msg: Message) -> list[Output]:
        out: list[Output] = []
        closed = self._closed.get(msg.session)
        if closed is not None:
            if msg.seq <= closed.seq:
                raise ProtocolError(f"replayed {msg.type} of a closed session")
            closed.seq = msg.seq
            search = self.search
            if msg.type == "RESULT" and search is not None and search.offer.search == closed.search:
                # lost, yet it finished: accepted for a task it held
                self._one_result(route, msg.session, closed.name, msg, None, closed.assigned, out)
            elif msg.type == "RESULTS" and search is not None and search.offer.search == closed.search:
                out += self._results(route, msg.session, closed.name, msg, None, closed.assigned, 0.0)
        elif msg.session in self._challenges:
            raise ProtocolError(f"{msg.type} from session {msg.session} before its bound HELLO")
        elif msg.type != "BYE":
            logger.info("a %s from unknown session %s; asking it to say HELLO again", msg.type, msg.session)
        if msg.type != "BYE":
            # Addressed to the session it answers: only that worker acts on it, and only
            # while that session lasts (a replay cannot keep a worker reconnecting).
            out.append(Send(route, msg.session, "SHUTDOWN", {"exit": False, "reason": "unknown session; say HELLO again"}))
        return out

    def _on_hello(self, route: bytes, msg: Message, now: float) -> list[Output]:
        if msg.session in self.peers or msg.session in self._closed:
            raise ProtocolError(f"replayed HELLO (session {msg.session} already seen)")
        header = msg.header
        mismatch = version_mismatch(self.versions, header["versions"])
        if mismatch is not None:
            logger.warning("rejected worker %s (%s): %s", header["name"], header["host"], mismatch)
            self.stats["rejected"] += 1
            self._remember(msg.session, _Closed(header["name"], header["worker_id"], None, msg.seq, now, set()))
            return [Send(route, msg.session, "REJECT", {"reason": mismatch})]
        if header["slots"] < 1 or not all(isinstance(c, str) for c in header["contexts"]):
            raise ProtocolError("HELLO with bad slots or contexts")
        if not isinstance(header.get("host_id"), (str, type(None))):
            raise ProtocolError("HELLO with a host_id that is not a string")
        nonce = header.get("nonce")
        challenge = self._challenges.get(msg.session)
        if nonce is None:
            # The first HELLO of a connection: answered with a fresh nonce, which the
            # second must carry. It binds the session to this master and this moment,
            # so a HELLO recorded anywhere else (another master with the same token, an
            # earlier connection) changes nothing here.
            if challenge is not None:
                raise ProtocolError(f"replayed HELLO (session {msg.session} already challenged)")
            nonce = secrets.token_hex(16)
            self._challenges[msg.session] = (nonce, now, msg.seq)
            while len(self._challenges) > MAX_CHALLENGES:
                self._challenges.popitem(last=False)
            self.stats["challenges"] += 1
            return [Send(route, msg.session, "CHALLENGE", {"nonce": nonce})]
        if challenge is None or not hmac.compare_digest(challenge[0], nonce) or msg.seq <= challenge[2]:
            self.stats["unbound_hellos"] += 1
            raise ProtocolError(f"HELLO from {header['name']!r} not bound to this master: no challenge of "
                                "ours for that session and nonce (a replay, or meant for another master)")
        del self._challenges[msg.session]
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
        slots = header["slots"]
        if slots > self.max_slots:
            logger.warning("worker %s announced %d slots; counted as %d", name, slots, self.max_slots)
            slots = self.max_slots
        worker = self.make_worker(msg.session, name, slots)
        peer = Peer(route, msg.session, header["worker_id"], name, slots, header["pid"],
                    header["host"], worker, last_recv=now, seq_in=msg.seq, contexts=set(header["contexts"]),
                    host_id=header.get("host_id"))
        # Results that the worker's earlier sessions still owe (it offers them again on
        # this one) stay acceptable, each once.
        search = self.search
        if search is not None:
            for closed in self._closed.values():
                if closed.worker_id == peer.worker_id and closed.search == search.offer.search:
                    peer.assigned |= closed.assigned
                    closed.assigned = set()
        self.peers[msg.session] = peer
        self._by_route[route] = msg.session
        self._by_worker[peer.worker_id] = msg.session
        self._names.add(name)
        self.stats["hellos"] += 1
        logger.info("worker %s joined from %s (pid %d, %d slot(s))", name, peer.host, peer.pid, peer.slots)
        out.append(self._send(peer, now, "WELCOME", {"name": name, "heartbeat": self.heartbeat,
                                                      "timeout": self.heartbeat_timeout}))
        return out + self._offer(peer, now) + self._dispatch_calls(now)

    def _current(self, peer: Peer, msg: Message, *states: PeerState) -> _Search | None:
        """The search, if ``msg`` is about it and ``peer`` is in one of ``states``."""
        search = self.search
        if search is None or msg["search"] != search.offer.search or peer.state not in states:
            return None
        return search

    def _on_ready(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        search = self._current(peer, msg, PeerState.ASKED, PeerState.QUEUED, PeerState.SENDING)
        if search is None:
            return []
        self._end_turn(peer, search)
        if msg["error"] is not None:
            peer.state = PeerState.FAILED
            logger.error("worker %s could not load the context; it will not be used:\n%s", peer.name, msg["error"])
            return []
        if msg["context_id"] != search.offer.context_id:
            raise ProtocolError(f"READY from {peer.name} names context {msg['context_id']}, not {search.offer.context_id}")
        peer.state = PeerState.READY
        peer.contexts.add(msg["context_id"])
        search.joined += 1
        return [WorkerJoined(peer.worker), *self._next_uploads(search, now)]

    def _on_need(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        search = self._current(peer, msg, PeerState.ASKED)
        if search is None:
            return []
        # At most max_uploads transfers at once, in the order asked: peers that take the
        # data and never say READY cannot make the master send it to all of them at once.
        peer.state = PeerState.QUEUED
        peer.credit = max(1, msg["credit"])
        # Only a peer that was offered the segment may skip its frames.
        peer.shared = msg.header.get("shared") is True and self._may_share(peer, search)
        search.waiting.append(peer.session)
        return self._next_uploads(search, now)

    def _next_uploads(self, search: _Search, now: float) -> list[Output]:
        out: list[Output] = []
        while search.waiting and len(search.sending) < self.max_uploads:
            peer = self.peers.get(search.waiting.popleft())
            if peer is None or peer.state is not PeerState.QUEUED or self.search is not search:
                continue
            peer.state = PeerState.SENDING
            peer.progress_at = now
            search.sending.add(peer.session)
            peer.upload = Upload(shared=peer.shared)
            peer.upload.grant(peer.credit)
            self.stats["contexts_sent"] += 1
            self.stats["contexts_shared"] += peer.shared
            self.stats["context_bytes_sent"] += search.offer.wire_bytes(peer.shared)
            out += self._pump(peer, search.offer, now)
        return out

    @staticmethod
    def _end_turn(peer: Peer, search: _Search) -> None:
        search.sending.discard(peer.session)

    def _on_credit(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        search = self._current(peer, msg, PeerState.SENDING)
        if search is None:
            return []
        peer.progress_at = now
        peer.upload.grant(msg["credit"])
        return self._pump(peer, search.offer, now)

    def _on_result(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        # Accepted whatever the peer's state: a worker re-offering results after a
        # reconnect has not said READY yet. The search id (random per search) ties the
        # result to this search; the scheduler keeps the first result of each task.
        out: list[Output] = []
        if len(peer.acks) >= MAX_ACKS:  # the scheduler has had all of these
            out.append(self._acks(peer, now))
        self._one_result(peer.route, peer.session, peer.name, msg, peer, peer.assigned, out)
        return out

    def _one_result(self, route: bytes, session: str, name: str, msg: Message, peer: Peer | None,
                    assigned: set[tuple[int, int]], out: list[Output]) -> None:
        """A RESULT message's one result: its event and ack (if any) appended to ``out``."""
        self._result(route, session, name, msg["search"], msg["task_id"], msg["attempt"], msg["result"],
                     msg["failure"], peer, assigned, out, out)

    def _on_results(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        """Several RESULTs in one message: their events go to the scheduler as one
        ``Results`` (handled in order, then one dispatch), their acks as RESULT's."""
        return self._results(peer.route, peer.session, peer.name, msg, peer, peer.assigned, now)

    def _results(self, route: bytes, session: str, name: str, msg: Message, peer: Peer | None,
                 assigned: set[tuple[int, int]], now: float) -> list[Output]:
        entries = msg["results"]
        if len(entries) > MAX_BATCH:
            raise ProtocolError(f"malformed RESULTS from {name}")
        for e in entries:  # plain checks, no generator: this runs once per task
            if not (isinstance(e, list) and len(e) == 4 and type(e[0]) is int and type(e[1]) is int
                    and (e[2] is None or isinstance(e[2], dict)) and (e[3] is None or isinstance(e[3], str))):
                raise ProtocolError(f"malformed RESULTS from {name}")
        out: list[Output] = []
        if peer is not None and len(peer.acks) >= MAX_ACKS:
            out.append(self._acks(peer, now))
        events: list[Any] = []
        search = msg["search"]
        for task_id, attempt, result, failure in entries:
            self._result(route, session, name, search, task_id, attempt, result, failure, peer, assigned, events, out)
        if events:
            out.insert(0, events[0] if len(events) == 1 else Results(tuple(events)))
        return out

    def _result(self, route: bytes, session: str, name: str, search_id: Any, task_id: int, attempt: int,
                result: Any, failure: Any, peer: Peer | None, assigned: set[tuple[int, int]],
                events: list[Any], sends: list[Output]) -> None:
        """One result: its event (if it counts) appended to ``events``, its ack queued on
        ``peer`` or, for a closed session, appended to ``sends`` as a RESULT_ACK."""
        search = self.search
        key = (task_id, attempt)
        if search is None or search_id != search.offer.search:
            self.stats["stale_results"] += 1
        elif key not in assigned:
            # Only the session (or the worker's earlier session) that was sent this task
            # can answer it, once: a token holder cannot score tasks it was never given.
            # Acknowledged all the same, so that an honest duplicate is forgotten.
            self.stats["unassigned_results"] += 1
            logger.debug("ignored a result for task %d attempt %d not assigned to %s", task_id, attempt, name)
        elif failure is not None:
            events.append(TaskFailed(name, task_id, attempt, failure))
            self.stats["results"] += 1
        else:
            try:
                fold_result = FoldResult.from_message(result)
            except (ValueError, TypeError, KeyError) as exc:
                raise ProtocolError(f"invalid result from {name}: {exc}") from None
            events.append(TaskFinished(name, task_id, attempt, fold_result))
            self.stats["results"] += 1
        assigned.discard(key)
        # Acks ride on the worker's next TASK, which the scheduler usually sends while
        # it handles this very result (else they leave on their own within the
        # housekeeping period): one message less per task for both sides to sign,
        # send, wake up for and check. An ack never leaves before its result's event.
        ack = [search_id, task_id, attempt]
        if peer is None:  # a closed session: acknowledged at once, on its own
            sends.append(Send(route, session, "RESULT_ACK", {"acks": [ack]}))
        else:
            peer.acks.append(ack)

    def _on_bye(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        return self.lose(peer.session, f"left: {msg['reason']}")

    def _on_call_result(self, peer: Peer, msg: Message, now: float) -> list[Output]:
        call, outcome = self.calls.result(peer.session, msg)
        if call is None or outcome is None:
            return []
        if isinstance(outcome, CallDone):
            return [outcome, *self._dispatch_calls(now)]
        logger.info("worker %s lacks %d buffer(s) of call %d; sending them again", peer.name, len(outcome),
                    call.call_id)
        return [self._send(peer, now, "CALL", *self.calls.message(call, peer.session))]

    _handlers: dict[str, Callable[[PeerTable, Peer, Message, float], list[Output]]] = {
        "READY": _on_ready,
        "NEED": _on_need,
        "CREDIT": _on_credit,
        "RESULT": _on_result,
        "RESULTS": _on_results,
        "BYE": _on_bye,
        "CALL_RESULT": _on_call_result,
    }

    # -- calls (the joblib backend) ---------------------------------------------------------

    def call(self, call: Call, now: float) -> list[Output]:
        """Queue ``call``; sent at once to the least busy peer with room (``slots + 1``)."""
        self.calls.waiting.append(call)
        return self._dispatch_calls(now)

    def _dispatch_calls(self, now: float) -> list[Output]:
        out: list[Output] = []
        calls = self.calls
        while calls.waiting:
            open_peers = [p for p in self.peers.values() if calls.load(p.session) < p.slots + 1]
            if not open_peers:
                break
            peer = min(open_peers, key=lambda p: calls.load(p.session) / p.slots)
            call = calls.waiting.popleft()
            self.stats[f"calls_to:{peer.name}"] += 1
            out.append(self._send(peer, now, "CALL", *calls.assign(call, peer.session)))
        return out

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
            peer.assigned = set()
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
            frames: list[Any] = dumps(task.params, memmaps=False)
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
        peer.assigned.add((task.task_id, task.attempt))
        if len(frames) == 2 and sum(memoryview(f).nbytes for f in frames) <= INLINE_PARAMS_BYTES:
            # Usual params (a few numbers and strings) travel inside the signed header:
            # two frames fewer, each a pyzmq call that gives up the GIL.
            fields["params"] = [bytes(f) for f in frames]
            frames = []
        return [self._send(peer, now, "TASK", fields, frames)]

    def submit_many(self, session: str, tasks: Sequence[Task], now: float) -> list[Output]:
        """TASKS messages for ``tasks`` to ``session``, in order (a task whose params
        are too large to travel inline goes as its own TASK, in its place)."""
        from ..serialization import dumps

        peer = self.peers.get(session)
        search = self.search
        if peer is None or search is None or search.offer.context_id is None:
            return []
        out: list[Output] = []
        entries: list[list[Any]] = []
        size = 0

        def close() -> None:
            nonlocal entries, size
            if not entries:
                return
            fields: dict[str, Any] = {"search": search.offer.search, "context_id": search.offer.context_id,
                                      "tasks": entries}
            if peer.acks:
                fields["acks"], peer.acks = peer.acks, []
            out.append(self._send(peer, now, "TASKS", fields))
            self.stats["task_batches"] += 1
            entries, size = [], 0

        last: tuple[Any, list[Any], int] | None = None  # the folds of a candidate share its params
        batched = 0  # tasks sent in TASKS (counted once, not per task)
        for task in tasks:
            if last is not None and last[0] is task.params:
                frames, nbytes = last[1], last[2]
            else:
                try:
                    frames = dumps(task.params, memmaps=False)
                except Exception:  # submit reports it as a TaskFailed
                    frames = []
                nbytes = sum(memoryview(f).nbytes for f in frames)
                if len(frames) == 2 and nbytes <= INLINE_PARAMS_BYTES:
                    frames = [bytes(f) for f in frames]
                last = (task.params, frames, nbytes)
            if len(frames) != 2 or nbytes > INLINE_PARAMS_BYTES:
                close()
                out += self.submit(session, task, now)
                continue
            batched += 1
            peer.assigned.add((task.task_id, task.attempt))
            entries.append([task.task_id, task.attempt, task.fold, frames])
            size += nbytes
            if size >= BATCH_BYTES or len(entries) >= MAX_BATCH:
                close()
        close()
        if batched:
            self.stats["tasks_sent"] += batched
            self.stats[f"tasks_to:{peer.name}"] += batched
        return out

    def _offer(self, peer: Peer, now: float) -> list[Output]:
        search = self.search
        if search is None:
            return []
        if search.offer.context_id is None and peer.contexts:
            peer.state = PeerState.WAITING
            return []
        peer.state = PeerState.ASKED
        return [self._send(peer, now, "SEARCH", search.offer.search_fields(shared=self._may_share(peer, search)))]

    def _may_share(self, peer: Peer, search: _Search) -> bool:
        """Whether ``peer`` runs on this machine, where it can map the search's segment."""
        return search.offer.segment is not None and self.host_id is not None and peer.host_id == self.host_id

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
        out: list[Output] = [*self.calls.lost(session), *self._dispatch_calls(peer.last_recv)]
        search = self.search
        served = search is not None and peer.state is PeerState.READY
        if search is not None:
            self._end_turn(peer, search)  # the next transfer starts at the next tick
        # Remembered a while (bounded), to refuse its replays and take a late result.
        self._remember(peer.session, _Closed(peer.name, peer.worker_id, search.offer.search if served and search else None,
                                             peer.seq_in, peer.last_recv, peer.assigned))
        return out + ([WorkerLost(peer.name, reason)] if served else [])

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
            elif peer.state is PeerState.SENDING and now - peer.progress_at > 2 * self.heartbeat_timeout:
                out += self.lose(peer.session, f"the context transfer made no progress (no CREDIT nor READY) "
                                               f"for {now - peer.progress_at:.1f} s")
            elif peer.acks:
                out.append(self._acks(peer, now))
            elif now - peer.last_send >= self.heartbeat and peer.session not in busy:
                out.append(self._send(peer, now, "HEARTBEAT"))
        self._expire(now)
        out += self._dispatch_calls(now)
        out += self.calls.starving(bool(self.peers), now, self.join_timeout)
        search = self.search
        if search is not None:
            out += self._next_uploads(search, now)
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

    def _remember(self, session: str, closed: _Closed) -> None:
        self._closed[session] = closed
        while len(self._closed) > MAX_CLOSED:
            self._closed.popitem(last=False)

    def _expire(self, now: float) -> None:
        """Per-session state is bounded: challenges and closed sessions expire."""
        while self._challenges:
            session, (_, since, _) = next(iter(self._challenges.items()))
            if now - since <= self.heartbeat_timeout:
                break
            del self._challenges[session]
        while self._closed:
            session, closed = next(iter(self._closed.items()))
            if now - closed.since <= self.session_ttl:
                break
            del self._closed[session]

    def goodbye(self, now: float, exit: bool, reason: str) -> list[Output]:
        """End the search and send every peer SHUTDOWN; the table is empty afterwards."""
        out = self.end_search(now)
        out += [self._send(peer, now, "SHUTDOWN", {"exit": exit, "reason": reason}) for peer in self.peers.values()]
        out += self.calls.fail_all(f"the pool closed: {reason}")
        self.calls.held.clear()
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
