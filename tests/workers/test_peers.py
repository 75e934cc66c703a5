"""The master's peer table in virtual time: messages and the clock in, instructions
out; no socket, no thread, no sleep (the real-socket tests are the thin layer above)."""

from __future__ import annotations

import itertools
import threading

import pytest

from hpsearch.errors import NoWorkersError, ProtocolError
from hpsearch.evaluation import FoldResult
from hpsearch.workers.base import PoolFailed, Task, TaskFailed, TaskFinished, WorkerJoined, WorkerLost
from hpsearch.workers.peers import MAX_ACKS, PeerState, PeerTable, Send
from hpsearch.workers.protocol import Message, local_versions
from hpsearch.workers.transfer import Offer

SEARCH = 77
CID = "c" * 64
RESULT = FoldResult({"score": 0.5}, 0.1, 0.01, 10).to_message()
_sessions = itertools.count()


class Sim:
    """A simulated worker session: builds the messages a real one would send."""

    def __init__(self, name: str = "w", *, worker_id: str | None = None, contexts: list[str] | None = None,
                 pid: int = 100, versions: dict | None = None) -> None:
        self.name = name
        self.session = f"s{next(_sessions)}"
        self.route = self.session.encode()
        self.seq = 0
        self.worker_id = worker_id or f"id-{self.session}"
        self.contexts = contexts or []
        self.pid = pid
        self.versions = versions or local_versions()

    def msg(self, kind: str, **fields) -> Message:
        self.seq += 1
        return Message(kind, self.session, self.seq, {"type": kind, **fields}, [])

    def hello(self, nonce: str | None = None, slots: int = 2) -> Message:
        return self.msg("HELLO", worker_id=self.worker_id, name=self.name, host="sim", pid=self.pid, slots=slots,
                        versions=self.versions, contexts=self.contexts, nonce=nonce)

    def join(self, t: PeerTable, now: float, slots: int = 2) -> list:
        """HELLO, the master's CHALLENGE, HELLO with its nonce: the outputs of the last."""
        out = t.receive(self.route, self.hello(slots=slots), now)
        if sends(out) != [(self.session, "CHALLENGE")]:
            return out  # a REJECT
        return t.receive(self.route, self.hello(out[0].fields["nonce"], slots=slots), now)

    def result(self, task_id: int, search: int = SEARCH, failure: str | None = None) -> Message:
        return self.msg("RESULT", search=search, task_id=task_id, attempt=0,
                        result=None if failure else RESULT, failure=failure)


def table(**kwargs) -> PeerTable:
    kwargs = {"heartbeat": 1.0, "heartbeat_timeout": 10.0, "min_workers": 1, "join_timeout": 30.0, **kwargs}
    return PeerTable(local_versions(), lambda session, name, slots: f"worker:{name}", **kwargs)


def offer(chunks: int = 3, sealed: bool = True) -> Offer:
    frames = [bytes([i]) * 10 for i in range(chunks)]
    result = Offer.from_frames(SEARCH, frames, limit=10)
    if sealed:
        result.context_id = CID
    return result


def sends(outputs) -> list[tuple[str, str]]:
    return [(o.to, o.kind) for o in outputs if isinstance(o, Send)]


def events(outputs) -> list:
    return [o for o in outputs if not isinstance(o, Send)]


def ready(t: PeerTable, sim: Sim, now: float = 0.0) -> None:
    """Bring ``sim`` to READY in ``t``'s current search (the worker holds the context)."""
    sim.join(t, now)
    out = t.receive(sim.route, sim.msg("READY", search=SEARCH, context_id=CID, error=None), now)
    assert events(out) == [WorkerJoined(f"worker:{sim.name}")]


def assign(t: PeerTable, sim: Sim, *task_ids: int) -> None:
    """Send ``sim`` these tasks (attempt 0): only then may it post their results."""
    for task_id in task_ids:
        assert sends(t.submit(sim.session, Task(task_id, task_id, 0, {"C": 1.0}), 0.0)) == [(sim.session, "TASK")]


def test_hello_gets_welcome_then_the_search_and_the_context_flows_against_credit():
    t, w = table(), Sim("a")
    t.start_search(offer(chunks=5), 0.0)
    out = w.join(t, 0.0)
    assert sends(out) == [(w.session, "WELCOME"), (w.session, "SEARCH")]
    assert t.peers[w.session].state is PeerState.ASKED
    out = t.receive(w.route, w.msg("NEED", search=SEARCH, context_id=CID, credit=2), 0.1)
    assert [o.fields["index"] for o in out] == [0, 1] and "sizes" in out[0].fields
    assert t.peers[w.session].state is PeerState.SENDING
    out = t.receive(w.route, w.msg("CREDIT", search=SEARCH, context_id=CID, credit=1000), 0.2)
    assert [o.fields["index"] for o in out] == [2, 3, 4]  # credit clamped, no chunk twice
    assert out[-1].fields["context_id"] == CID
    out = t.receive(w.route, w.msg("READY", search=SEARCH, context_id=CID, error=None), 0.3)
    assert out == [WorkerJoined("worker:a")] and t.peers[w.session].state is PeerState.READY
    assert t.stats["contexts_sent"] == 1


def test_the_last_chunk_and_holders_wait_for_the_content_id():
    t, fresh, holder = table(), Sim("fresh"), Sim("holder", contexts=["0" * 64])
    fresh.join(t, 0.0)
    holder.join(t, 0.0)
    out = t.start_search(offer(chunks=3, sealed=False), 0.0)
    assert sends(out) == [(fresh.session, "SEARCH")]  # the holder may hold it: asked later
    assert t.peers[holder.session].state is PeerState.WAITING
    out = t.receive(fresh.route, fresh.msg("NEED", search=SEARCH, context_id=None, credit=64), 0.1)
    assert [(o.fields["index"], o.fields["context_id"]) for o in out] == [(0, None), (1, None)]
    out = t.seal(SEARCH, CID, 0.2)
    assert sends(out) == [(fresh.session, "CONTEXT"), (holder.session, "SEARCH")]
    assert out[0].fields == {"search": SEARCH, "context_id": CID, "index": 2, "count": 3}
    assert t.seal(SEARCH + 1, "x" * 64, 0.3) == []  # another search's id: ignored


def test_messages_about_another_search_or_out_of_turn_change_nothing():
    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    w.join(t, 0.0)
    assert t.receive(w.route, w.msg("CREDIT", search=SEARCH, context_id=CID, credit=5), 0.0) == []
    assert t.receive(w.route, w.msg("NEED", search=SEARCH + 1, context_id=CID, credit=5), 0.0) == []
    assert t.receive(w.route, w.msg("READY", search=SEARCH + 1, context_id=CID, error=None), 0.0) == []
    assert t.peers[w.session].state is PeerState.ASKED
    with pytest.raises(ProtocolError, match="names context"):
        t.receive(w.route, w.msg("READY", search=SEARCH, context_id="d" * 64, error=None), 0.0)


def test_a_worker_that_cannot_load_the_context_is_not_used():
    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    w.join(t, 0.0)
    out = t.receive(w.route, w.msg("READY", search=SEARCH, context_id="", error="Traceback: no module"), 0.0)
    assert out == [] and t.peers[w.session].state is PeerState.FAILED


def test_replays_are_refused_whatever_their_type():
    t, w = table(), Sim()
    first = w.hello()
    nonce = t.receive(w.route, first, 0.0)[0].fields["nonce"]
    with pytest.raises(ProtocolError, match="replayed HELLO"):
        t.receive(w.route, first, 0.5)
    bound = w.hello(nonce)
    t.receive(w.route, bound, 0.5)
    for replay in (first, bound):
        with pytest.raises(ProtocolError, match="replayed HELLO"):
            t.receive(w.route, replay, 1.0)
    heartbeat = w.msg("HEARTBEAT")
    t.receive(w.route, heartbeat, 1.0)
    with pytest.raises(ProtocolError, match="replayed HEARTBEAT"):
        t.receive(w.route, heartbeat, 2.0)
    t.receive(w.route, w.msg("BYE", reason="done"), 2.0)
    with pytest.raises(ProtocolError, match="closed session"):
        t.receive(w.route, heartbeat, 3.0)


def test_versions_that_differ_get_a_reject_and_no_peer():
    t, w = table(), Sim(versions={**local_versions(), "hpsearch": "0.0.0"})
    out = w.join(t, 0.0)
    assert sends(out) == [(w.session, "REJECT")] and "hpsearch" in out[0].fields["reason"]
    assert not t.peers and t.stats["rejected"] == 1


def test_a_result_is_an_event_and_its_ack_rides_on_the_next_task():
    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    assign(t, w, 4)
    out = t.receive(w.route, w.result(4), 1.0)
    assert [(type(e).__name__, e.task_id) for e in out] == [("TaskFinished", 4)]
    assert out[0].result.test_scores == {"score": 0.5}
    out = t.submit(w.session, Task(5, 1, 0, {"C": 1.0}), 1.0)
    assert sends(out) == [(w.session, "TASK")]
    assert out[0].fields["acks"] == [[SEARCH, 4, 0]] and len(out[0].fields["params"]) == 2
    out = t.receive(w.route, w.result(5, failure="the context is gone"), 1.5)
    assert out == [TaskFailed("w", 5, 0, "the context is gone")]
    out = t.tick(1.6)  # no TASK to ride on: the housekeeping sends it
    assert sends(out) == [(w.session, "RESULT_ACK")] and out[0].fields == {"acks": [[SEARCH, 5, 0]]}


def test_acks_never_pile_up_beyond_max_acks():
    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    assign(t, w, *range(MAX_ACKS + 1))
    for task_id in range(MAX_ACKS):
        assert sends(t.receive(w.route, w.result(task_id), 0.0)) == []
    out = t.receive(w.route, w.result(MAX_ACKS), 0.0)
    assert sends(out) == [(w.session, "RESULT_ACK")] and len(out[0].fields["acks"]) == MAX_ACKS
    assert isinstance(out[1], TaskFinished)  # the older acks first; this result's is held


def test_params_that_cannot_be_serialized_fail_the_task_as_data():
    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    out = t.submit(w.session, Task(1, 0, 0, {"f": threading.Lock()}), 0.0)
    assert len(out) == 1 and isinstance(out[0], TaskFailed) and "could not be serialized" in out[0].error


def test_silent_peers_are_lost_and_quiet_ones_get_heartbeats_in_virtual_time():
    t, w, idle = table(heartbeat=1.0, heartbeat_timeout=10.0), Sim("w"), Sim("idle")
    t.start_search(offer(), 0.0)
    ready(t, w)
    idle.join(t, 0.0)
    assert sends(t.tick(0.5)) == []
    assert sends(t.tick(1.0)) == [(w.session, "HEARTBEAT"), (idle.session, "HEARTBEAT")]
    assert sends(t.tick(2.0, busy=[w.session])) == [(idle.session, "HEARTBEAT")]
    t.receive(w.route, w.msg("HEARTBEAT"), 5.0)
    out = t.tick(10.5)
    assert events(out) == []  # the idle one was never READY: lost without an event
    assert list(t.peers) == [w.session] and t.stats["lost"] == 1
    assert events(t.tick(15.5)) == [WorkerLost("w", "silent for 10.5 s")]


def test_a_dead_process_is_lost_at_once():
    t, w = table(), Sim(pid=4242)
    t.start_search(offer(), 0.0)
    ready(t, w)
    assert events(t.tick(0.1, dead_pids={4242})) == [WorkerLost("w", "process 4242 exited")]


def test_a_lost_peers_late_result_counts_for_its_search_only():
    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    assign(t, w, 3)
    t.receive(w.route, w.msg("BYE", reason="SIGTERM"), 1.0)
    out = t.receive(w.route, w.result(3), 2.0)
    assert [type(o).__name__ for o in out] == ["TaskFinished", "Send", "Send"]
    assert sends(out) == [(w.session, "RESULT_ACK"), (w.session, "SHUTDOWN")]
    t.start_search(Offer(SEARCH + 1, [], [], 0, CID), 3.0)
    out = t.receive(w.route, w.result(4), 4.0)
    assert events(out) == [] and sends(out) == [(w.session, "SHUTDOWN")]  # not acknowledged either


def test_strangers_are_told_to_say_hello_and_byes_are_not_answered():
    t, w = table(), Sim()
    out = t.receive(w.route, w.msg("HEARTBEAT"), 0.0)
    assert sends(out) == [(w.session, "SHUTDOWN")] and out[0].fields["exit"] is False
    assert t.receive(w.route, w.msg("BYE", reason="x"), 0.0) == []


def test_a_reconnected_worker_replaces_its_old_session():
    t, old = table(), Sim("w", worker_id="same")
    t.start_search(offer(), 0.0)
    ready(t, old)
    new = Sim("w", worker_id="same")
    out = new.join(t, 1.0)
    assert events(out) == [WorkerLost("w", "reconnected")]
    assert list(t.peers) == [new.session] and t.peers[new.session].name == "w"
    moved = t.receive(b"other-route", new.msg("HEARTBEAT"), 2.0)  # a ZeroMQ reconnect: new route
    assert moved == [] and t.peers[new.session].route == b"other-route"


def test_names_are_unique_among_connected_peers():
    t = table()
    sims = [Sim("same") for _ in range(3)]
    for sim in sims:
        sim.join(t, 0.0)
    assert [t.peers[s.session].name for s in sims] == ["same", "same#2", "same#3"]


def test_a_search_without_any_worker_for_join_timeout_fails():
    t, w = table(join_timeout=30.0), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    t.receive(w.route, w.msg("BYE", reason="gone"), 1.0)
    assert events(t.tick(2.0)) == []
    assert events(t.tick(31.0)) == []
    failed = events(t.tick(32.5))
    assert len(failed) == 1 and isinstance(failed[0], PoolFailed)
    assert isinstance(failed[0].error, NoWorkersError)


def test_ending_the_search_cancels_it_everywhere_and_flushes_acks():
    t, a, b = table(), Sim("a"), Sim("b")
    t.start_search(offer(), 0.0)
    ready(t, a)
    b.join(t, 0.0)
    assign(t, a, 1)
    t.receive(a.route, a.result(1), 0.5)
    out = t.end_search(1.0)
    assert sends(out) == [(a.session, "RESULT_ACK"), (a.session, "CANCEL"), (b.session, "CANCEL")]
    assert all(p.state is PeerState.IDLE for p in t.peers.values())
    assert t.submit(a.session, Task(1, 0, 0, {}), 1.0) == []
    out = t.goodbye(2.0, exit=True, reason="over")
    assert sends(out) == [(a.session, "SHUTDOWN"), (b.session, "SHUTDOWN")] and not t.peers


# -- the worker's side of a transfer, without a socket ---------------------------------------


def context_messages(frames, search: int, cid: str, limit: int) -> list[Message]:
    from hpsearch.workers.transfer import Upload

    upload, source = Upload(), Offer.from_frames(search, frames, limit=limit)
    source.context_id = cid
    upload.grant(64)
    return [Message("CONTEXT", "m", i + 1, {"type": "CONTEXT", **fields}, chunk)
            for i, (fields, chunk) in enumerate(upload.chunks(source))]


def test_a_context_travels_in_chunks_and_is_cached_by_content_id():
    import numpy as np

    from hpsearch.evaluation import EvaluationContext
    from hpsearch.serialization import content_id, dumps
    from hpsearch.workers.transfer import ContextStore

    context = EvaluationContext(None, np.arange(50_000.0), None, [], {})
    frames = dumps(context)
    cid = content_id(frames)
    store = ContextStore(size=1)
    assert store.on_search({"search": 1, "context_id": None, "nbytes": 0})[0] == "NEED"
    replies = [store.on_context(m) for m in context_messages(frames, 1, cid, limit=100_000)]
    assert [kind for kind, _ in replies] == ["CREDIT"] * (len(replies) - 1) + ["READY"]
    assert replies[-1][1] == {"search": 1, "context_id": cid, "error": None}
    np.testing.assert_array_equal(store.contexts[cid].X, context.X)
    assert store.on_search({"search": 2, "context_id": cid, "nbytes": 0}) == (
        "READY", {"search": 2, "context_id": cid, "error": None})  # held: not sent again


def test_a_context_altered_in_transit_is_refused_before_unpickling(tmp_path):
    from hpsearch.serialization import dumps
    from hpsearch.workers.transfer import ContextStore

    from .helpers import MarkerPickle

    marker = tmp_path / "unpickled"
    frames = [bytes(f) for f in dumps({"payload": MarkerPickle(str(marker))})]
    store = ContextStore()
    store.on_search({"search": 1, "context_id": "a" * 64, "nbytes": 0})
    replies = [store.on_context(m) for m in context_messages(frames, 1, "a" * 64, limit=1 << 20)]
    kind, fields = replies[-1]
    assert kind == "READY" and "does not hash to its content id" in fields["error"]
    assert not marker.exists() and not store.contexts and store.assembly is None


# -- the stricter rules: assignment, binding to this master, caps, expiry -------------------


def test_results_count_only_for_tasks_assigned_to_that_session():
    t, honest, forger = table(), Sim("honest"), Sim("forger")
    t.start_search(offer(), 0.0)
    ready(t, honest)
    ready(t, forger)
    t.submit(honest.session, Task(1, 0, 0, {"C": 1.0}), 0.0)
    t.submit(forger.session, Task(2, 0, 1, {"C": 2.0}), 0.0)
    # A token holder posting results for tasks it was never sent: no event at all.
    for task_id in (1, 3, 4):
        assert events(t.receive(forger.route, forger.result(task_id), 1.0)) == []
    wrong_attempt = forger.msg("RESULT", search=SEARCH, task_id=2, attempt=5, result=RESULT, failure=None)
    assert events(t.receive(forger.route, wrong_attempt, 1.0)) == []
    assert t.stats["unassigned_results"] == 4 and t.stats["results"] == 0
    # Its own task, once; the honest worker's, once.
    own = forger.msg("RESULT", search=SEARCH, task_id=2, attempt=0, result=RESULT, failure=None)
    assert [e.task_id for e in events(t.receive(forger.route, own, 1.0))] == [2]
    assert [e.task_id for e in events(t.receive(honest.route, honest.result(1), 1.0))] == [1]
    assert events(t.receive(honest.route, honest.result(1), 1.1)) == []  # a duplicate changes nothing
    assert t.stats["results"] == 2


def test_a_reconnected_worker_may_still_deliver_what_its_lost_session_held():
    t, old = table(), Sim("w", worker_id="same")
    t.start_search(offer(), 0.0)
    ready(t, old)
    t.submit(old.session, Task(7, 0, 0, {"C": 1.0}), 0.0)
    t.receive(old.route, old.msg("BYE", reason="network"), 1.0)
    new = Sim("w", worker_id="same")
    new.join(t, 2.0)
    assert [e.task_id for e in events(t.receive(new.route, new.result(7), 2.0))] == [7]
    assert events(t.receive(old.route, old.result(7), 2.1)) == []  # once only


def test_a_hello_from_another_master_evicts_nobody():
    # The same token, an earlier master: everything it recorded, replayed here.
    earlier, victim = table(), Sim("victim", worker_id="live")
    first = victim.hello()
    nonce = earlier.receive(victim.route, first, 0.0)[0].fields["nonce"]
    bound = victim.hello(nonce)
    earlier.receive(victim.route, bound, 0.0)

    t, live = table(), Sim("victim", worker_id="live")
    t.start_search(offer(), 0.0)
    ready(t, live)
    with pytest.raises(ProtocolError, match="not bound to this master"):
        t.receive(live.route, bound, 1.0)  # on the live worker's route, with its worker id
    assert sends(t.receive(live.route, first, 1.0)) == [(victim.session, "CHALLENGE")]  # only a challenge
    assert list(t.peers) == [live.session] and t.stats["lost"] == 0
    # A nonce from this master, for another session, binds nothing either.
    other = Sim("x", worker_id="live")
    mine = t.receive(other.route, other.hello(), 1.0)[0].fields["nonce"]
    thief = Sim("x", worker_id="live")
    t.receive(thief.route, thief.hello(), 1.0)
    with pytest.raises(ProtocolError, match="not bound"):
        t.receive(thief.route, thief.hello(mine), 1.0)
    assert list(t.peers) == [live.session]


def test_slots_are_capped():
    t, greedy = table(max_slots=8), Sim("greedy")
    greedy.join(t, 0.0, slots=1000)
    assert t.peers[greedy.session].slots == 8


def test_context_transfers_are_limited_to_max_uploads_at_once_and_must_progress():
    t = table(max_uploads=2, heartbeat_timeout=10.0)
    t.start_search(offer(chunks=3), 0.0)
    takers = [Sim(f"taker{i}") for i in range(5)]
    for sim in takers:
        sim.join(t, 0.0)
    chunks = []
    for sim in takers:
        chunks += [o.to for o in t.receive(sim.route, sim.msg("NEED", search=SEARCH, context_id=CID, credit=64), 0.0)]
    assert sorted(set(chunks)) == sorted([takers[0].session, takers[1].session])  # two at once
    assert [t.peers[s.session].state for s in takers[2:]] == [PeerState.QUEUED] * 3
    # The takers never say READY (heartbeats keep them alive): their turn ends anyway.
    for now in (5.0, 10.0, 15.0, 20.0):
        for sim in takers:
            t.receive(sim.route, sim.msg("HEARTBEAT"), now)
        t.tick(now)
    out = t.tick(20.5)
    assert takers[0].session not in t.peers and takers[1].session not in t.peers
    assert sorted({o.to for o in out if isinstance(o, Send) and o.kind == "CONTEXT"}) == \
        sorted([takers[2].session, takers[3].session])
    assert t.stats["contexts_sent"] == 4  # never all five at once


def test_per_session_state_expires():
    t = table(heartbeat_timeout=10.0, session_ttl=100.0)
    sims = [Sim() for _ in range(50)]
    for sim in sims:
        sim.join(t, 0.0)
        t.receive(sim.route, sim.msg("BYE", reason="x"), 0.0)
    half = [Sim() for _ in range(50)]
    for sim in half:
        t.receive(sim.route, sim.hello(), 0.0)  # challenged, never answered
    assert len(t._closed) == 50 and len(t._challenges) == 50
    t.tick(11.0)
    assert len(t._challenges) == 0 and len(t._closed) == 50
    t.tick(101.0)
    assert len(t._closed) == 0
    # An expired session's message is a stranger's: told to say HELLO, nothing else.
    assert sends(t.receive(sims[0].route, sims[0].msg("HEARTBEAT"), 102.0)) == [(sims[0].session, "SHUTDOWN")]


# -- batches (protocol 1.4: TASKS and RESULTS) ------------------------------------------


def test_a_batch_of_tasks_travels_in_one_tasks_message_with_the_pending_acks():
    from hpsearch.serialization import loads

    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    assign(t, w, 1)
    t.receive(w.route, w.result(1), 0.5)
    out = t.submit_many(w.session, [Task(i, i, i % 3, {"C": float(i)}) for i in range(2, 6)], 1.0)
    assert sends(out) == [(w.session, "TASKS")]
    fields = out[0].fields
    assert fields["acks"] == [[SEARCH, 1, 0]] and fields["context_id"] == CID and fields["search"] == SEARCH
    assert [e[:3] for e in fields["tasks"]] == [[i, 0, i % 3] for i in range(2, 6)]
    assert [loads(e[3]) for e in fields["tasks"]] == [{"C": float(i)} for i in range(2, 6)]
    assert t.stats["tasks_sent"] == 5


def test_a_task_too_large_to_ride_inline_goes_alone_in_its_place():
    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    big = {"C": b"x" * (70 * 1024)}
    out = t.submit_many(w.session, [Task(1, 1, 0, {"C": 1.0}), Task(2, 2, 0, big), Task(3, 3, 0, {"C": 3.0})], 0.0)
    assert sends(out) == [(w.session, "TASKS"), (w.session, "TASK"), (w.session, "TASKS")]
    assert [e[0] for e in out[0].fields["tasks"]] == [1] and out[1].fields["task_id"] == 2
    assert [e[0] for e in out[2].fields["tasks"]] == [3]


def test_results_together_are_one_results_event_and_count_only_if_assigned():
    from hpsearch.workers.base import Results

    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    t.submit_many(w.session, [Task(i, i, 0, {"C": 1.0}) for i in range(3)], 0.0)
    msg = w.msg("RESULTS", search=SEARCH, results=[
        [0, 0, RESULT, None], [1, 0, None, "the context is gone"], [7, 0, RESULT, None], [2, 0, RESULT, None],
    ])
    out = t.receive(w.route, msg, 1.0)
    assert len(events(out)) == 1 and isinstance(out[0], Results)
    assert [(type(e).__name__, e.task_id) for e in out[0].events] == [
        ("TaskFinished", 0), ("TaskFailed", 1), ("TaskFinished", 2)]  # 7 was never sent
    assert t.stats["unassigned_results"] == 1
    # their acks ride on the next TASKS, every one of them (the stranger's too)
    out = t.submit_many(w.session, [Task(9, 9, 0, {"C": 1.0})], 1.0)
    assert out[0].fields["acks"] == [[SEARCH, i, 0] for i in (0, 1, 7, 2)]
    # a malformed entry refuses the whole message, before any event
    bad = w.msg("RESULTS", search=SEARCH, results=[[9, 0, RESULT, None], ["x", 0, None, None]])
    with pytest.raises(ProtocolError):
        t.receive(w.route, bad, 2.0)


def test_a_lost_peers_late_results_count_for_its_search():
    from hpsearch.workers.base import Results

    t, w = table(), Sim()
    t.start_search(offer(), 0.0)
    ready(t, w)
    t.submit_many(w.session, [Task(i, i, 0, {"C": 1.0}) for i in range(2)], 0.0)
    t.receive(w.route, w.msg("BYE", reason="SIGTERM"), 1.0)
    out = t.receive(w.route, w.msg("RESULTS", search=SEARCH, results=[[0, 0, RESULT, None], [1, 0, RESULT, None]]), 2.0)
    assert isinstance(out[0], Results) and [e.task_id for e in out[0].events] == [0, 1]
    assert sends(out).count((w.session, "RESULT_ACK")) == 2
