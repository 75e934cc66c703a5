"""Shipping the evaluation context: chunking, the content id arriving last, the cache.

The master starts sending the data to workers that hold no context while it still
computes the content id; the last chunk carries the id, which the worker checks
against the bytes it hashed as they arrived.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import get_scorer

import hpsearch.serialization
from hpsearch import RemoteWorkers
from hpsearch.evaluation import EvaluationContext, evaluate
from hpsearch.serialization import ContentHasher, content_id, dumps
from hpsearch.workers import transfer
from hpsearch.workers.base import WorkerJoined
from hpsearch.workers.protocol import make_token, parse_token

from .helpers import FakeMaster, Rogue

RNG = np.random.default_rng(3)


def make_context(rows: int = 4000) -> EvaluationContext:
    X = RNG.normal(size=(rows, 8))
    y = X @ np.arange(8.0) + RNG.normal(size=rows)
    half = rows // 2
    return EvaluationContext(Ridge(), X, y, splits=[(np.arange(half), np.arange(half, rows))],
                             scorers={"score": get_scorer("r2")})


def test_chunks_cut_frames_without_copying_and_keep_every_byte():
    frames = dumps(make_context(20_000))  # a 1.3 MB buffer among small frames
    chunks = transfer.chunk_frames(frames, limit=100_000)
    assert len(chunks) > 10
    assert all(sum(piece.nbytes for piece in chunk) <= 100_000 for chunk in chunks)
    pieces = [piece for chunk in chunks for piece in chunk]
    assert b"".join(pieces) == b"".join(bytes(f) for f in frames)
    big = next(f for f in frames if memoryview(f).nbytes > 1_000_000)
    assert any(np.shares_memory(np.frombuffer(p, np.uint8), np.frombuffer(big, np.uint8)) for p in pieces)


def test_an_empty_worker_receives_data_while_the_master_hashes(monkeypatch):
    gate = threading.Event()

    class GatedHasher(ContentHasher):  # the master's hash finishes only when the test says
        def hexdigest(self) -> str:
            assert gate.wait(30), "the test never opened the gate"
            return super().hexdigest()

    monkeypatch.setattr(hpsearch.serialization, "ContentHasher", GatedHasher)
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 1 << 16)
    context = make_context()
    expected = content_id(dumps(context))
    events: list = []
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=1, join_timeout=30) as pool:
        secret = parse_token(pool.token)
        fresh, holder = Rogue(pool.endpoint, secret), Rogue(pool.endpoint, secret)
        starter = threading.Thread(target=pool.start, args=(context, events.append))
        try:
            assert fresh.join("fresh") is not None
            assert holder.join("holder", contexts=["0" * 64]) is not None  # holds some context
            starter.start()
            search = fresh.next("SEARCH")
            assert search is not None and search["context_id"] is None  # not known yet
            fields = {"search": search["search"], "context_id": None}
            fresh.send_raw(fresh.message("NEED", {**fields, "credit": 64}))
            first = [fresh.next("CONTEXT")]
            count = first[0]["count"]
            assert count > 3
            first += [fresh.next("CONTEXT") for _ in range(count - 2)]
            assert [c["index"] for c in first] == list(range(count - 1))
            assert all(c["context_id"] is None for c in first)
            assert fresh.next("CONTEXT", timeout=0.5) is None  # the last chunk waits for the id
            assert holder.next("SEARCH", timeout=0.2) is None  # it may hold this context: asked later
            gate.set()
            last = fresh.next("CONTEXT")
            assert last["index"] == count - 1 and last["context_id"] == expected
            asked = holder.next("SEARCH")
            assert asked is not None and asked["context_id"] == expected
            fresh.send_raw(fresh.message("READY", {**fields, "context_id": expected, "error": None}))
            starter.join(30)
            assert not starter.is_alive()
            assert [e.worker.name for e in events if isinstance(e, WorkerJoined)] == ["fresh"]
            assert pool.stats["contexts_sent"] == 1
        finally:
            gate.set()
            starter.join(30) if starter.is_alive() else None
            pool.stop()
            fresh.close()
            holder.close()


@pytest.mark.parametrize("chunk", [1 << 12, 1 << 30])
def test_worker_takes_the_id_from_the_last_chunk_and_runs_tasks(spawn_worker, chunk):
    token = make_token()
    master = FakeMaster(token)
    spawn_worker(master.endpoint, token)
    context = make_context()
    frames = dumps(context)
    chunks = transfer.chunk_frames(frames, limit=chunk)
    cid = content_id(frames)
    try:
        master.welcome()
        master.send("SEARCH", {"search": 5, "context_id": None, "nbytes": sum(len(c) for c in frames)})
        master.next("NEED")
        for index, pieces in enumerate(chunks):
            last = index == len(chunks) - 1
            fields = {"search": 5, "context_id": cid if last else None, "index": index, "count": len(chunks)}
            if index == 0:
                fields["sizes"] = [memoryview(f).nbytes for f in frames]
            master.send("CONTEXT", fields, pieces)
        ready = master.next("READY")
        assert (ready["context_id"], ready["error"]) == (cid, None)
        master.send("TASK", {"search": 5, "task_id": 1, "attempt": 0, "context_id": cid, "fold": 0},
                    dumps({"alpha": 2.0}))
        result = master.next("RESULT")
    finally:
        master.close()
    assert result["failure"] is None
    local = evaluate(context, {"alpha": 2.0}, 0)
    assert result["result"]["test_scores"] == pytest.approx(local.test_scores, abs=0, rel=1e-12)
