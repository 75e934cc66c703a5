"""Result acknowledgements: batched, riding on TASK messages, and what a worker re-offers.

A worker keeps every result until the master acknowledges it and offers the
unacknowledged ones again after a reconnect; the master acknowledges in batches,
on the worker's next TASK or in a RESULT_ACK carrying a list.
"""

from __future__ import annotations

from hpsearch.serialization import dumps
from hpsearch.workers.protocol import make_token

from .helpers import FakeMaster, load_ridge_context

SEARCH = 11


def load_context(master: FakeMaster) -> str:
    return load_ridge_context(master, SEARCH)


def task(master: FakeMaster, cid: str, task_id: int, **extra) -> dict:
    master.send("TASK", {"search": SEARCH, "task_id": task_id, "attempt": 0, "context_id": cid, "fold": 0,
                         **extra}, dumps({"alpha": float(task_id)}))
    result = master.next("RESULT")
    assert (result["task_id"], result["failure"]) == (task_id, None)
    return result


def reoffered(master: FakeMaster) -> list[int]:
    """Make the worker reconnect; the task ids of the results it offers again."""
    master.send("SHUTDOWN", {"exit": False, "reason": "test: reconnect"})
    master.welcome()
    got = []
    while True:
        try:
            got.append(master.next("RESULT", timeout=1.0)["task_id"])
        except AssertionError:
            return sorted(got)


def test_worker_forgets_results_acknowledged_on_a_task_or_in_a_batch(spawn_worker):
    token = make_token()
    master = FakeMaster(token)
    spawn_worker(master.endpoint, token)
    try:
        master.welcome()
        cid = load_context(master)
        task(master, cid, 1)
        task(master, cid, 2)
        task(master, cid, 3, acks=[[SEARCH, 1, 0]])  # rides on the next TASK
        assert reoffered(master) == [2, 3]
        master.send("RESULT_ACK", {"acks": [[SEARCH, 2, 0], [SEARCH, 3, 0], [SEARCH, 99, 0], "junk"]})
        assert reoffered(master) == []
    finally:
        master.close()


def test_a_shutdown_from_another_master_counts_only_when_addressed_to_this_session(spawn_worker):
    from hpsearch.workers.protocol import WORKER_TYPES, Codec, parse_token

    token = make_token()
    master = FakeMaster(token)
    spawn_worker(master.endpoint, token)
    try:
        hello = master.welcome()
        successor = Codec(parse_token(token), WORKER_TYPES)  # another master session, same token

        def shutdown(to: str) -> None:
            envelope = successor.encode("SHUTDOWN", {"exit": False, "reason": "test"}, to=to)
            master.router.send_multipart([master.route, *envelope])

        shutdown("not-this-session")  # a replay meant for some other session: ignored
        try:
            master.next("HELLO", timeout=2.0)
            raise AssertionError("the worker reconnected on a SHUTDOWN addressed to another session")
        except AssertionError as exc:
            assert "no HELLO" in str(exc)
        shutdown(hello.session)
        again = master.next("HELLO", timeout=10.0)
        assert again.session != hello.session  # a new session: the old "to" is spent
    finally:
        master.close()
