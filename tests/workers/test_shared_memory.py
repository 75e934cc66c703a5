"""Shared-memory contexts on one machine: the segment, the transfer without its bytes,
the peer table's offer, and LocalProcesses end to end (scores, kills, no leaks)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.metrics import get_scorer
from sklearn.model_selection import GridSearchCV

import hpsearch.serialization.codec as codec
from hpsearch import LocalProcesses, RemoteWorkers, run_search
from hpsearch.errors import ProtocolError
from hpsearch.evaluation import EvaluationContext
from hpsearch.serialization import content_id, dumps, loads
from hpsearch.workers.peers import PeerState
from hpsearch.workers.protocol import Message, make_token
from hpsearch.workers.shared import Segment, SegmentCache, SharedMemoryUnavailable, attach, host_id
from hpsearch.workers.transfer import Assembly, ContextStore, Offer, Upload

from .helpers import SleepEstimator, assert_same_scores
from .test_peers import SEARCH, Sim, events, sends, table

pytestmark = pytest.mark.skipif(host_id() is None, reason="shared memory files need Linux")

RNG = np.random.default_rng(5)


def make_context(rows: int = 40_000) -> EvaluationContext:
    X = RNG.normal(size=(rows, 8))  # 2.5 MB: shared; y (320 kB) travels
    y = X @ np.arange(8.0) + RNG.normal(size=rows)
    half = rows // 2
    return EvaluationContext(Ridge(), X, y, splits=[(np.arange(half), np.arange(half, rows))],
                             scorers={"score": get_scorer("r2")})


def memfds(pid: int | str = "self") -> list[str]:
    """The hpsearch memory files a process holds open or mapped."""
    found = []
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{entry}"))
        except OSError:  # closed meanwhile (the listing's own fd)
            pass
    with open(f"/proc/{pid}/maps") as maps:
        found += [line.split(None, 5)[-1].strip() for line in maps if "memfd:hpsearch-" in line]
    return [f for f in found if "memfd:hpsearch-" in f]


def in_shared_memory(array: np.ndarray) -> bool:
    """Whether ``array``'s data lies in a mapping of an hpsearch segment in this process."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "memfd:hpsearch-" in line:
                start, end = (int(part, 16) for part in line.split()[0].split("-"))
                if start <= address < end:
                    return True
    return False


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """No file in /dev/shm, and no segment still open or mapped here, after any test."""
    import gc

    shm_before = set(os.listdir("/dev/shm"))
    yield
    gc.collect()  # arrays on a mapping let it go
    assert memfds() == []
    assert not [n for n in set(os.listdir("/dev/shm")) - shm_before if "hpsearch" in n]


def transfer_messages(offer: Offer, shared: bool) -> list[Message]:
    upload = Upload(shared=shared)
    upload.grant(64)
    return [Message("CONTEXT", "m", i + 1, {"type": "CONTEXT", **fields}, chunk)
            for i, (fields, chunk) in enumerate(upload.chunks(offer))]


# -- the segment -------------------------------------------------------------------------


def test_a_segment_holds_the_large_buffers_sealed_and_maps_read_only():
    frames = dumps(make_context())
    segment = Segment.create(frames)
    try:
        assert sorted(segment.frames) == [2]  # X only; y and the splits are below 1 MB
        views = attach(segment.describe())
        assert bytes(views[2]) == bytes(frames[2]) and views[2].readonly
        path = f"/proc/{os.getpid()}/fd/{segment.fd}"
        handle = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(PermissionError):  # sealed: nobody can change it
                os.pwrite(handle, b"x", 0)
        finally:
            os.close(handle)
    finally:
        segment.close()


def test_nothing_to_share_below_the_threshold():
    assert Segment.create(dumps(make_context(rows=1000))) is None


def test_attach_refuses_anything_but_the_sealed_segment_it_names():
    segment = Segment.create(dumps(make_context()))
    good = segment.describe()
    try:
        for bad in ({**good, "name": "hpsearch-0000000000000000"}, {**good, "name": "other"},
                    {**good, "nbytes": good["nbytes"] + 1}, {**good, "pid": 1 << 22},
                    {**good, "frames": [[2, good["nbytes"], 10]]}, {**good, "fd": None}, "nonsense"):
            with pytest.raises(SharedMemoryUnavailable):
                attach(bad)
    finally:
        segment.close()
    with pytest.raises(SharedMemoryUnavailable):  # closed: nothing to open any more
        attach(good)


def test_the_cache_keeps_the_latest_segments_and_closes_the_others():
    cache = SegmentCache(size=1)
    first, second = dumps(make_context()), dumps(make_context())
    a = cache.get("a", first)
    assert cache.get("a", first) is a and a.fd is not None
    cache.get("b", second)
    assert a.fd is None and len(cache) == 1
    cache.close()
    assert len(cache) == 0 and memfds() == []


# -- the worker's side: frames mapped, the rest received, one content id --------------------


@pytest.mark.parametrize("frame_limit", [None, 1 << 20])
def test_a_context_assembled_from_shared_and_received_frames_is_checked_and_not_copied(monkeypatch, frame_limit):
    if frame_limit is not None:  # X split over three frames: shared whole, joined without a copy
        monkeypatch.setattr(codec, "MAX_FRAME_BYTES", frame_limit)
    context = make_context()
    frames = dumps(context)
    cid = content_id(frames)
    segment = Segment.create(frames)
    try:
        offer = Offer.from_frames(1, frames, limit=100_000, segment=segment)
        offer.context_id = cid
        store = ContextStore()
        kind, fields = store.on_search({"search": 1, "context_id": cid, "nbytes": offer.nbytes,
                                        "shared": segment.describe()})
        assert kind == "NEED" and fields["shared"] is True
        messages = transfer_messages(offer, shared=True)
        sent = sum(piece.nbytes for m in messages for piece in m.payload)
        assert sent == offer.wire_bytes(True) < offer.nbytes - context.X.nbytes + 1
        replies = [store.on_context(m) for m in messages]
        assert replies[-1] == ("READY", {"search": 1, "context_id": cid, "error": None})
        X = store.contexts[cid].X
        np.testing.assert_array_equal(X, context.X)
        assert not X.flags.writeable
        assert in_shared_memory(X)  # not a copy: the arrays lie on the mapping
        assert not in_shared_memory(store.contexts[cid].y)  # small: received
        assert store.assembly is None
    finally:
        segment.close()


def test_shared_frames_that_do_not_hash_to_the_id_are_refused():
    frames = dumps(make_context())
    other = list(frames)
    other[2] = np.frombuffer(frames[2], np.uint8)[::-1].copy()  # same size, other bytes
    segment = Segment.create(other)
    try:
        offer = Offer.from_frames(1, frames, segment=segment)
        offer.context_id = content_id(frames)
        store = ContextStore()
        store.on_search({"search": 1, "context_id": offer.context_id, "nbytes": 0, "shared": segment.describe()})
        kind, fields = [store.on_context(m) for m in transfer_messages(offer, shared=True)][-1]
        assert kind == "READY" and "does not hash to its content id" in fields["error"]
        assert not store.contexts
    finally:
        segment.close()


def test_a_worker_that_cannot_map_the_segment_asks_for_everything():
    store = ContextStore()
    kind, fields = store.on_search({"search": 1, "context_id": "a" * 64, "nbytes": 10,
                                    "shared": {"pid": 1, "fd": 3, "name": "hpsearch-00", "nbytes": 1,
                                               "frames": [[2, 0, 1]]}})
    assert kind == "NEED" and "shared" not in fields
    assert store.assembly is not None and not store.assembly.shared


def test_received_frames_that_contradict_the_shared_sizes_are_refused():
    frames = dumps(make_context())
    segment = Segment.create(frames)
    try:
        assembly = Assembly(1, None, shared=attach(segment.describe()))
        sizes = [memoryview(f).nbytes for f in frames]
        sizes[2] += 8
        with pytest.raises(ProtocolError, match="shared frames do not match"):
            assembly.add(Message("CONTEXT", "m", 1, {"type": "CONTEXT", "search": 1, "context_id": None,
                                                     "index": 0, "count": 1, "sizes": sizes}, []))
    finally:
        segment.close()


# -- the master's peer table ----------------------------------------------------------------


def shared_offer() -> tuple[Offer, Segment]:
    frames = dumps(make_context())
    segment = Segment.create(frames)
    offer = Offer.from_frames(SEARCH, frames, limit=100_000, segment=segment)
    offer.context_id = content_id(frames)
    return offer, segment


class LocalSim(Sim):
    def __init__(self, name: str, host: str | None) -> None:
        super().__init__(name)
        self.host_id = host

    def msg(self, kind: str, **fields):
        if kind == "HELLO":
            fields["host_id"] = self.host_id
        return super().msg(kind, **fields)


def test_the_segment_is_offered_only_to_peers_on_this_machine():
    offer, segment = shared_offer()
    try:
        t = table(host_id="here")
        local, remote, old = LocalSim("local", "here"), LocalSim("remote", "elsewhere"), LocalSim("old", None)
        for sim in (local, remote, old):
            sim.join(t, 0.0)
        out = t.start_search(offer, 0.0)
        searches = {o.to: o.fields for o in out if o.kind == "SEARCH"}
        assert "shared" in searches[local.session]
        assert "shared" not in searches[remote.session] and "shared" not in searches[old.session]
        cid = offer.context_id
        # A local peer that maps it gets the small frames only.
        out = t.receive(local.route, local.msg("NEED", search=SEARCH, context_id=cid, credit=64, shared=True), 0.1)
        assert len(out) == len(offer.local_chunks) < len(offer.chunks)
        # A peer that was not offered the segment gets everything, whatever it says.
        out = t.receive(remote.route, remote.msg("NEED", search=SEARCH, context_id=cid, credit=64, shared=True), 0.1)
        assert len(out) == len(offer.chunks)
        assert t.stats["contexts_shared"] == 1 and t.stats["contexts_sent"] == 2
        assert t.stats["context_bytes_sent"] == offer.wire_bytes(True) + offer.nbytes
        out = t.receive(local.route, local.msg("READY", search=SEARCH, context_id=cid, error=None), 0.2)
        assert events(out) and t.peers[local.session].state is PeerState.READY
    finally:
        segment.close()


def test_without_a_master_host_id_nobody_is_offered_the_segment():
    offer, segment = shared_offer()
    try:
        t, sim = table(), LocalSim("local", host_id())
        sim.join(t, 0.0)
        out = t.start_search(offer, 0.0)
        assert sends(out) == [(sim.session, "SEARCH")] and "shared" not in out[0].fields
    finally:
        segment.close()


def test_a_hello_with_a_host_id_that_is_not_a_string_is_refused():
    t, sim = table(host_id="here"), LocalSim("odd", 42)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="host_id"):
        sim.join(t, 0.0)


# -- end to end: real worker processes ------------------------------------------------------


class InPlaceScaler(BaseEstimator, RegressorMixin):
    """Centres its training data in place (as ``copy=False`` estimators do)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X, y):
        X -= X.mean(axis=0)  # raises on a read-only array
        self.coef_ = np.linalg.lstsq(X.T @ X + self.alpha * np.eye(X.shape[1]), X.T @ y, rcond=None)[0]
        return self

    def predict(self, X):
        return X @ self.coef_


def test_local_processes_map_the_data_and_score_as_gridsearchcv():
    X = RNG.normal(size=(30_000, 64))  # 15 MB; y and the CV indices (1.2 MB) travel
    y = X @ RNG.normal(size=64) + RNG.normal(size=len(X))
    space = {"alpha": [0.1, 1.0, 10.0]}
    with LocalProcesses(2, heartbeat_timeout=10) as pool:
        result = run_search(Ridge(), space, X, y, cv=3, workers=pool, progress=False)
        # A straggler's leftover copy may cost a process (killed, replaced, sent the
        # context again): every transfer counts, and each one was shared.
        assert pool.stats["contexts_shared"] == pool.stats["contexts_sent"] >= 2
        assert pool.stats["context_bytes_sent"] < pool.stats["contexts_sent"] * X.nbytes / 8
        assert any(memfds(proc.pid) for proc in pool.processes), "no worker mapped the segment"
        # (on a copy: the refit centres the caller's array too, as scikit-learn's does)
        in_place = run_search(InPlaceScaler(), space, X.copy(), y, cv=3, workers=pool, progress=False)
        # The same data again: the first search's segment is reused, not made again.
        again = run_search(Ridge(), space, X, y, cv=3, workers=pool, progress=False)
        assert len(pool._segments) == 2
        assert pool.stats["contexts_shared"] == pool.stats["contexts_sent"]
    assert memfds() == []  # the pool closed its segments
    assert_same_scores(result, again)
    expected = GridSearchCV(Ridge(), space, cv=3).fit(X, y)
    np.testing.assert_array_equal(result.cv_results_["mean_test_score"], expected.cv_results_["mean_test_score"])
    expected = GridSearchCV(InPlaceScaler(), space, cv=3).fit(X.copy(), y)
    np.testing.assert_array_equal(in_place.cv_results_["mean_test_score"], expected.cv_results_["mean_test_score"])


def test_a_worker_killed_mid_search_loses_nothing_and_its_replacement_maps_the_data():
    context = make_context()
    X = context.X
    space = {"c": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "delay": [0.2]}
    with LocalProcesses(2, heartbeat_timeout=10) as pool:
        killed: list[int] = []

        def kill_one() -> None:
            deadline = time.monotonic() + 60
            while pool.stats["results"] < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            pid = pool.processes[0].pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        thread = threading.Thread(target=kill_one, daemon=True)
        thread.start()
        result = run_search(SleepEstimator(), space, X, cv=2, workers=pool, progress=False)
        thread.join(60)
        assert killed and pool.stats["restarts"] >= 1
        # The replacement joins during the search or the next one; either way it maps.
        deadline = time.monotonic() + 60
        while pool.n_workers < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        run_search(SleepEstimator(), {"c": [1.0, 2.0]}, X, cv=2, workers=pool, progress=False)
        assert pool.stats["contexts_shared"] >= 3 and pool.stats["contexts_shared"] == pool.stats["contexts_sent"]
    threads = run_search(SleepEstimator(), space, X, cv=2, workers=2, progress=False)
    assert_same_scores(result, threads)
    assert memfds() == []


def test_remote_workers_share_only_when_asked(spawn_worker):
    context = make_context()
    for shared_memory, expected in ((False, 0), (True, 1)):
        with RemoteWorkers("tcp://127.0.0.1:*", token=make_token(), min_workers=1, join_timeout=60,
                           shared_memory=shared_memory) as pool:
            spawn_worker(pool.endpoint, pool.token)
            result = run_search(Ridge(), {"alpha": [1.0]}, context.X, context.y, cv=2, workers=pool,
                                progress=False)
            assert pool.stats["contexts_shared"] == expected and pool.stats["contexts_sent"] == 1
        assert result.best_params_ == {"alpha": 1.0}
    assert memfds() == []


def test_a_segment_that_cannot_be_made_means_the_data_travels(monkeypatch):
    def no_memory_files(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", no_memory_files)
    cache = SegmentCache()
    assert cache.get("a", dumps(make_context())) is None and len(cache) == 0
