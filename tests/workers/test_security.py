"""Hostile input on the master's port, and the worker CLI's refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from hpsearch import RemoteWorkers, run_search
from hpsearch.errors import InvalidParameterError, NoWorkersError
from hpsearch.serialization import content_id, dumps
from hpsearch.workers.local import child_environment
from hpsearch.workers.protocol import local_versions, make_token, parse_token

from .helpers import FakeMaster, MarkerPickle, Recording, Rogue, SleepEstimator, load_ridge_context, wait_for

RNG = np.random.default_rng(1)
X = RNG.normal(size=(40, 3))
SPACE = {"c": [float(c) for c in range(8)], "delay": [0.05]}


def reference():
    return run_search(SleepEstimator(), {"c": SPACE["c"], "delay": [0.0]}, X, cv=3, workers=1, progress=False)


def test_empty_token_is_refused_and_none_generates_one():
    with pytest.raises(InvalidParameterError, match="non-loopback"):
        RemoteWorkers("tcp://0.0.0.0:5555", token="")
    with pytest.raises(InvalidParameterError, match="token"):
        RemoteWorkers("tcp://127.0.0.1:5555", token="not-a-token")
    pool = RemoteWorkers("tcp://0.0.0.0:5555")
    assert pool.token.startswith("hps1:") and pool.token in pool.join_command


def test_no_worker_gives_a_clear_error():
    with RemoteWorkers("tcp://127.0.0.1:*", join_timeout=0.5) as pool:
        with pytest.raises(NoWorkersError, match="hpsearch-worker --connect"):
            run_search(SleepEstimator(), {"c": [1.0]}, X, cv=2, workers=pool, progress=False)


@pytest.mark.slow
def test_hostile_peers_never_get_tasks_or_stop_the_search(spawn_worker, tmp_path):
    marker = tmp_path / "unpickled"
    with RemoteWorkers("tcp://127.0.0.1:*", min_workers=1, join_timeout=60,
                       heartbeat=0.5, heartbeat_timeout=5.0) as pool:
        secret = parse_token(pool.token)
        intruder = spawn_worker(pool.endpoint, make_token(), "--name", "intruder")
        spawn_worker(pool.endpoint, pool.token, "--name", "honest")
        recording = Recording(pool)
        attacks = Rogue(pool.endpoint, secret)
        wrong_key = Rogue(pool.endpoint, parse_token(make_token()))
        try:
            # A peer with the right token but wrong versions: REJECT, and its HELLO replayed.
            hello = attacks.hello("old", versions=local_versions({"hpsearch": "0.0.0"}))
            attacks.send_raw(hello)
            reject = attacks.receive(10)
            assert reject is not None and reject.type == "REJECT" and "0.0.0" in reject["reason"]
            attacks.send_raw(hello)  # replay
            wrong_key.send_raw(wrong_key.hello("forger"))  # badly signed
            attacks.send_raw([b"garbage"])
            attacks.send_raw([os.urandom(4), os.urandom(32), os.urandom(100)])
            attacks.send_raw([attacks.hello("cut")[0][:40]])  # truncated
            attacks.send_raw([*attacks.hello("multi"), b"extra"])  # a payload frame from a worker
            attacks.send_raw([b"HPS\x01B" + os.urandom(96)])  # unsigned junk
            unknown = attacks.codec.encode("HEARTBEAT")
            attacks.send_raw(unknown)  # signed, but its session never said HELLO
            # A RESULT carrying a pickle, as a payload frame and inside the header.
            bomb = dumps(MarkerPickle(str(marker)))
            fields = {"search": 1, "task_id": 0, "attempt": 0, "result": None, "failure": None}
            attacks.send_raw(attacks.message("RESULT", fields, tuple(bomb)))
            attacks.send_raw(attacks.message("RESULT", {**fields, "result": {"pickle": bytes(bomb[1])}}))
            result = run_search(SleepEstimator(), SPACE, X, cv=3, workers=recording, progress=False)
            # Oversized: libzmq refuses it (MAXMSGSIZE) and drops the connection.
            big = Rogue(pool.endpoint, secret)
            big.send_raw(attacks.message("BYE", {"reason": "x" * (pool.max_message_size + 1)}))
            time.sleep(0.5)
            big.close()
            again = run_search(SleepEstimator(), SPACE, X, cv=3, workers=pool, progress=False)
            wait_for(lambda: pool.stats["dropped"] >= 7, 10, "the hostile messages to be dropped")
        finally:
            attacks.close()
            wrong_key.close()
        assert intruder.poll() is None  # still knocking: never accepted
        assert all(not key.endswith(("intruder", "forger", "old", "cut", "multi")) for key in pool.stats)
        assert pool.stats["rejected"] == 1 and pool.stats["hellos"] == 1
    assert not marker.exists()
    ref = reference()
    for res in (result, again):
        np.testing.assert_array_equal(res.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])
    assert {e.worker for e in recording.finished()} == {"honest"}


def test_worker_refuses_context_bytes_that_do_not_match_the_content_id(spawn_worker, tmp_path):
    """CONTEXT chunks are signed by length only: the content id guards their bytes."""
    marker = tmp_path / "unpickled"
    token = make_token()
    master = FakeMaster(token)
    spawn_worker(master.endpoint, token)
    try:
        master.welcome()
        announced = content_id(dumps({"benign": np.zeros(3)}))
        bomb = dumps(MarkerPickle(str(marker)))  # what a man in the middle slips in
        master.send("SEARCH", {"search": 7, "context_id": announced, "nbytes": sum(len(f) for f in bomb)})
        master.next("NEED")
        master.send("CONTEXT", {"search": 7, "context_id": announced, "index": 0, "count": 1,
                                "sizes": [len(f) for f in bomb]}, bomb)
        ready = master.next("READY")
    finally:
        master.close()
    assert ready["search"] == 7 and "does not hash to its content id" in ready["error"]
    assert not marker.exists()


def test_a_master_message_addressed_to_another_worker_session_is_dropped(spawn_worker):
    """The master's sequence numbers are shared by its workers: what it sends one worker
    would pass another's replay check, so every master message names its recipient."""
    token = make_token()
    master = FakeMaster(token)
    proc = spawn_worker(master.endpoint, token)
    try:
        master.welcome()
        cid = load_ridge_context(master, 5)
        fields = {"search": 5, "attempt": 0, "context_id": cid, "fold": 0}
        master.send("TASK", {**fields, "task_id": 1}, dumps({"alpha": 1.0}), to="0123456789abcdef")
        master.send("TASK", {**fields, "task_id": 2}, dumps({"alpha": 2.0}))
        assert master.next("RESULT")["task_id"] == 2  # task 1 was never run
        with pytest.raises(AssertionError, match="no RESULT"):
            master.next("RESULT", timeout=1.0)
    finally:
        master.close()
        proc.kill()
    assert "addressed to another worker session" in proc.communicate(timeout=10)[1].decode()


def test_a_reject_from_a_master_older_than_protocol_1_2_still_stops_the_worker(spawn_worker):
    token = make_token()
    master = FakeMaster(token)
    proc = spawn_worker(master.endpoint, token)
    try:
        master.next("HELLO")
        envelope = master.codec.encode("REJECT", {"reason": "incompatible versions (protocol: master 1.1)"})
        master.router.send_multipart([master.route, *envelope])  # no "to": an older master
        assert proc.wait(30) == 3
    finally:
        master.close()
    assert "protocol: master 1.1" in proc.communicate(timeout=10)[1].decode()


@pytest.mark.slow
def test_version_mismatch_worker_exits_naming_both_versions(spawn_worker):
    with RemoteWorkers("tcp://127.0.0.1:*") as pool:
        proc = spawn_worker(pool.endpoint, pool.token, "--fake-version", "hpsearch=0.0.0")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    text = err.decode()
    assert "worker 0.0.0" in text and f"master {local_versions()['hpsearch']}" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--connect", "nonsense", "--token", make_token()], "bad address"),
        (["--connect", "tcp://127.0.0.1:1", "--token", "hps1:!!"], "unreadable token"),
        (["--connect", "tcp://127.0.0.1:1"], "no token"),
    ],
)
def test_worker_cli_refuses_bad_arguments(args, message):
    env = child_environment()
    env.pop("HPSEARCH_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "hpsearch.worker_cli", *args], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
