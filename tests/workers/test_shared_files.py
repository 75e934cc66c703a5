"""Memory-mapped data on one machine: local workers map the user's file itself, as the
master does, instead of a copy; a file that changed is not mapped, or refused."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import get_scorer
from sklearn.model_selection import GridSearchCV

from hpsearch import LocalProcesses, run_search
from hpsearch.evaluation import EvaluationContext
from hpsearch.serialization import content_id, dumps, loads
from hpsearch.workers.shared import Segment, SharedMemoryUnavailable, attach, host_id
from hpsearch.workers.transfer import ContextStore, Offer

from .helpers import assert_same_scores
from .test_shared_memory import memfds, nothing_left_behind, transfer_messages  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(host_id() is None, reason="shared memory files need Linux")

RNG = np.random.default_rng(7)


def memmapped(tmp_path, rows: int = 40_000, mode: str = "r", columns: int = 8) -> np.memmap:
    """X (2.5 MB by default: shared) saved to a file and mapped back from it."""
    path = tmp_path / "X.npy"
    np.save(path, RNG.normal(size=(rows, columns)))
    return np.load(path, mmap_mode=mode)


def make_context(X: np.ndarray) -> EvaluationContext:
    y = np.asarray(X @ np.arange(8.0) + RNG.normal(size=len(X)))  # 320 kB: travels
    half = len(X) // 2
    return EvaluationContext(Ridge(), X, y, splits=[(np.arange(half), np.arange(half, len(X)))],
                             scorers={"score": get_scorer("r2")})


def maps_file(path, pid: int | str = "self") -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return any(line.rstrip("\n").endswith(str(path)) for line in maps)


def lies_in_mapping_of(array: np.ndarray, path) -> bool:
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip("\n").endswith(str(path)):
                start, end = (int(part, 16) for part in line.split()[0].split("-"))
                if start <= address < end:
                    return True
    return False


def test_a_memmap_pickles_out_of_band_as_a_plain_array(tmp_path):
    X = memmapped(tmp_path)
    frames = dumps(X)
    assert [memoryview(f).nbytes for f in frames[2:]] == [X.nbytes]  # not in the pickle stream
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), X)
    out = loads(frames)
    assert type(out) is np.ndarray and not out.flags.writeable
    np.testing.assert_array_equal(out, X)
    plain = np.array(X)
    plain.flags.writeable = False  # as the memmap (pickle records the flag)
    assert content_id(frames) == content_id(dumps(plain))  # the same content, the same id
    assert len(dumps(X, memmaps=False)) == 2  # pickle's own dumps: a copy in-band


def test_a_file_backed_buffer_is_mapped_from_its_file_not_copied(tmp_path):
    X = memmapped(tmp_path)
    frames = dumps(make_context(X))
    segment = Segment.create(frames)
    try:
        assert segment.fd is None and segment.frames == {} and segment.nbytes == 0  # no copy made
        (file,) = segment.files
        assert file["path"] == str(tmp_path / "X.npy") and file["frames"] == [[2, X.offset, X.nbytes]]
        assert segment.shared_sizes == {2: X.nbytes}
        views = attach(segment.describe())
        assert bytes(views[2]) == bytes(frames[2]) and views[2].readonly
        assert memfds() == []
    finally:
        segment.close()


def test_a_private_or_deleted_mapping_is_copied_into_shared_memory(tmp_path):
    # A copy-on-write mapping may hold pages the file does not; a deleted file has no path.
    for X in (memmapped(tmp_path, mode="c"), memmapped(tmp_path)):
        if X.mode == "r":
            os.unlink(tmp_path / "X.npy")
        segment = Segment.create(dumps(make_context(X)))
        try:
            assert sorted(segment.frames) == [2] and segment.files == []
        finally:
            segment.close()
        del X


def test_a_context_with_a_mapped_file_is_assembled_from_it_and_checked(tmp_path):
    X = memmapped(tmp_path)
    frames = dumps(make_context(X))
    cid = content_id(frames)
    segment = Segment.create(frames)
    offer = Offer.from_frames(1, frames, segment=segment)
    offer.context_id = cid
    store = ContextStore()
    kind, fields = store.on_search({"search": 1, "context_id": cid, "nbytes": offer.nbytes,
                                    "shared": segment.describe()})
    assert kind == "NEED" and fields["shared"] is True
    messages = transfer_messages(offer, shared=True)
    assert sum(piece.nbytes for m in messages for piece in m.payload) == offer.wire_bytes(True) < X.nbytes / 2
    assert [store.on_context(m) for m in messages][-1] == ("READY", {"search": 1, "context_id": cid, "error": None})
    held = store.contexts[cid].X
    np.testing.assert_array_equal(held, X)
    assert not held.flags.writeable
    assert lies_in_mapping_of(held, tmp_path / "X.npy")  # not a copy
    segment.close()


def test_a_file_changed_since_the_master_mapped_it_is_not_mapped(tmp_path):
    X = memmapped(tmp_path)
    path = tmp_path / "X.npy"
    segment = Segment.create(dumps(make_context(X)))
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    with pytest.raises(SharedMemoryUnavailable, match="changed since the master mapped it"):
        attach(segment.describe())
    os.replace(tmp_path / "X.npy", tmp_path / "old.npy")  # another file under the same name
    np.save(path, np.asarray(X))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(SharedMemoryUnavailable, match="changed since the master mapped it"):
        attach(segment.describe())
    os.unlink(path)
    with pytest.raises(SharedMemoryUnavailable, match="cannot open"):
        attach(segment.describe())
    # ... and a worker that cannot map it receives the bytes instead.
    store = ContextStore()
    kind, fields = store.on_search({"search": 1, "context_id": "a" * 64, "nbytes": 10,
                                    "shared": segment.describe()})
    assert kind == "NEED" and "shared" not in fields
    segment.close()


def test_a_file_rewritten_under_its_old_modification_time_is_refused_by_the_hash(tmp_path):
    X = memmapped(tmp_path)
    path = tmp_path / "X.npy"
    frames = dumps(make_context(X))
    cid = content_id(frames)  # the master hashes the file's bytes as they are now
    segment = Segment.create(frames)
    offer = Offer.from_frames(1, frames, segment=segment)
    offer.context_id = cid
    info = os.stat(path)
    with open(path, "r+b") as f:  # one byte changes; size and modification time are kept
        f.seek(info.st_size - 1)
        last = f.read(1)
        f.seek(info.st_size - 1)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    store = ContextStore()
    kind, fields = store.on_search({"search": 1, "context_id": cid, "nbytes": offer.nbytes,
                                    "shared": segment.describe()})
    assert fields["shared"] is True  # the file looks the same: it is mapped ...
    kind, fields = [store.on_context(m) for m in transfer_messages(offer, shared=True)][-1]
    assert kind == "READY" and "does not hash to its content id" in fields["error"]  # ... and refused
    assert not store.contexts
    segment.close()


def test_local_processes_map_a_memmapped_x_and_score_as_gridsearchcv(tmp_path):
    X = memmapped(tmp_path, rows=30_000, columns=64)  # 15 MB; y and the CV indices (1.2 MB) travel
    y = np.asarray(X @ RNG.normal(size=64) + RNG.normal(size=len(X)))
    path = tmp_path / "X.npy"
    space = {"alpha": [0.1, 1.0, 10.0]}
    with LocalProcesses(2, heartbeat_timeout=10) as pool:
        result = run_search(Ridge(), space, X, y, cv=3, workers=pool, progress=False)
        assert pool.stats["contexts_shared"] == pool.stats["contexts_sent"] >= 2
        assert pool.stats["context_bytes_sent"] < pool.stats["contexts_sent"] * X.nbytes / 8
        mapping = [proc.pid for proc in pool.processes if maps_file(path, proc.pid)]
        assert mapping, "no worker mapped the file"
        assert not any(memfds(pid) for pid in mapping)  # and none of them a copy
        # The file changes (here its time only): a worker that joins now cannot map it,
        # receives the bytes, and scores the same.
        info = os.stat(path)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
        victim = pool.processes[0].pid
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (pool.n_workers < 2 or victim in [p.pid for p in pool.processes]) and time.monotonic() < deadline:
            time.sleep(0.05)
        shared_before = pool.stats["contexts_shared"]
        again = run_search(Ridge(), space, X, y, cv=3, workers=pool, progress=False)
        assert pool.stats["contexts_sent"] > pool.stats["contexts_shared"] == shared_before
    assert memfds() == []
    assert_same_scores(result, again)
    expected = GridSearchCV(Ridge(), space, cv=3).fit(np.asarray(X), y)
    np.testing.assert_array_equal(result.cv_results_["mean_test_score"], expected.cv_results_["mean_test_score"])


def test_a_memmapped_x_on_threads_scores_as_gridsearchcv_on_the_plain_path(tmp_path):
    from hpsearch._engine import _plain_data

    X = memmapped(tmp_path, rows=2_000)
    y = np.asarray(X @ np.arange(8.0) + RNG.normal(size=len(X)))
    assert _plain_data(X, y)  # indexed as X[indices], one fold at a time
    space = {"alpha": [0.1, 1.0, 10.0]}
    result = run_search(Ridge(), space, X, y, cv=3, workers=2, progress=False)
    expected = GridSearchCV(Ridge(), space, cv=3).fit(X, y)
    np.testing.assert_array_equal(result.cv_results_["mean_test_score"], expected.cv_results_["mean_test_score"])
