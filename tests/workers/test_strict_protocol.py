"""The protocol's stricter rules over real sockets: a token holder cannot score tasks it
was never given, and a HELLO recorded under another master evicts nobody."""

from __future__ import annotations

import threading

import numpy as np

from hpsearch import RemoteWorkers, run_search
from hpsearch.evaluation import FoldResult
from hpsearch.workers.protocol import make_token, parse_token

from .helpers import Rogue, SleepEstimator, wait_for

X = np.random.default_rng(3).normal(size=(30, 3))
SPACE = {"c": [float(c) for c in range(6)], "delay": [0.05]}


def test_forged_results_and_a_hello_from_another_master_change_nothing(spawn_worker):
    token = make_token()
    secret = parse_token(token)
    # Under an earlier master with the same token, a worker's bound HELLO is recorded.
    with RemoteWorkers("tcp://127.0.0.1:*", token=token) as earlier:
        victim = Rogue(earlier.endpoint, secret)
        try:
            victim.send_raw(victim.hello("victim"))
            challenge = victim.next("CHALLENGE")
            recorded = victim.hello("victim", nonce=challenge["nonce"])
            victim.send_raw(recorded)
            assert victim.next("WELCOME") is not None
        finally:
            victim.close()

    reference = run_search(SleepEstimator(), {**SPACE, "delay": [0.0]}, X, cv=3, workers=1, progress=False)
    with RemoteWorkers("tcp://127.0.0.1:*", token=token, heartbeat=0.5, heartbeat_timeout=10.0) as pool:
        spawn_worker(pool.endpoint, token, "--name", "honest")
        live, replayer, forger = (Rogue(pool.endpoint, secret) for _ in range(3))
        box: dict = {}
        searcher = threading.Thread(target=lambda: box.update(result=run_search(
            SleepEstimator(), SPACE, X, cv=3, workers=pool, progress=False)))
        try:
            assert live.join("victim") is not None  # the same worker id, live on this master
            assert forger.join("forger") is not None
            searcher.start()
            search = forger.next("SEARCH")
            assert search is not None
            replayer.send_raw(recorded)  # replayed: not bound to this master
            forged = FoldResult({"score": 1e9}, 0.0, 0.0, 10).to_message()
            for task_id in range(len(SPACE["c"]) * 3):
                for attempt in (0, 1):
                    replay = {"search": search["search"], "task_id": task_id, "attempt": attempt,
                              "result": forged, "failure": None}
                    forger.send_raw(forger.message("RESULT", replay))
            searcher.join(60)
            assert not searcher.is_alive()
            wait_for(lambda: pool.stats["unassigned_results"] >= 2 * len(SPACE["c"]) * 3, 10,
                     "the forged results to arrive")
            assert pool.stats["unbound_hellos"] == 1
            assert pool.stats["lost"] == 0  # the live "victim" was not evicted
        finally:
            for rogue in (live, replayer, forger):
                rogue.close()
    result = box["result"]
    np.testing.assert_array_equal(result.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])
    assert result.best_score_ == reference.best_score_
