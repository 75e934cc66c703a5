"""Scheduling cost per task with 10 to 1,000 simulated remote workers, in virtual time.

    python benchmarks/bench_sim.py [--tasks 100000] [--workers 10 100 1000] [--slots 2]

Drives the real :class:`~hpsearch.scheduler.state.SchedulerState` and the real
:class:`~hpsearch.workers.peers.PeerTable` (HELLO, READY, TASK with pickled params,
RESULT rebuilt with ``FoldResult.from_message``, acks, housekeeping every 0.25 s of
virtual time) with simulated workers whose tasks take 0.5 to 1.5 virtual seconds. No
socket, thread or sleep: the figure is the master's own CPU cost per task (decoding
and signing aside), and it should not grow with the number of workers. Prints
microseconds per task, and the share spent in the peer table.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import time
from typing import Any

from hpsearch.evaluation import FoldResult
from hpsearch.scheduler.state import Ask, Dispatch, Proposed, SchedulerState
from hpsearch.strategies.base import Candidate
from hpsearch.workers.peers import PeerTable, Send
from hpsearch.workers.protocol import Message, local_versions
from hpsearch.workers.transfer import Offer

FOLDS = 5
SEARCH = 1
CID = "c" * 64
HOUSEKEEPING = 0.25
RESULT = FoldResult({"score": 0.5}, 0.1, 0.01, 10).to_message()


class SimHandle:
    """The scheduler's handle on a simulated worker (what RemoteWorker is for a real one)."""

    prefetch = 1

    def __init__(self, sim: Simulation, session: str, name: str, slots: int) -> None:
        self.sim, self.session, self.name, self.slots = sim, session, name, slots

    def submit(self, task: Any) -> None:
        self.sim.outputs(self.sim.table_call(self.sim.table.submit, self.session, task, self.sim.now))

    def close(self) -> None:
        pass


class Simulation:
    def __init__(self, n_workers: int, n_tasks: int, slots: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.events: list[tuple[float, int, Any]] = []
        self.order = itertools.count()
        self.table = PeerTable(local_versions(), lambda s, n, k: SimHandle(self, s, n, k),
                               heartbeat=1.0, heartbeat_timeout=1e9, min_workers=n_workers)
        self.state = SchedulerState(FOLDS)
        self.n_candidates = n_tasks // FOLDS
        self.next_candidate = 0
        self.seq: dict[str, int] = {}
        self.table_seconds = 0.0
        self.n_workers, self.slots = n_workers, slots

    def table_call(self, fn: Any, *args: Any) -> list[Any]:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.table_seconds += time.perf_counter() - start

    def message(self, session: str, kind: str, **fields: Any) -> Message:
        self.seq[session] = self.seq.get(session, 0) + 1
        return Message(kind, session, self.seq[session], {"type": kind, **fields}, [])

    def at(self, when: float, action: Any) -> None:
        heapq.heappush(self.events, (when, next(self.order), action))

    def outputs(self, outputs: list[Any]) -> None:
        """Carry out the table's answers: TASKs start on the simulated worker, events go
        to the scheduler (whose commands are carried out in turn)."""
        for out in outputs:
            if isinstance(out, Send):
                if out.kind == "TASK":
                    fields = out.fields
                    done = self.now + self.rng.uniform(0.5, 1.5)
                    self.at(done, ("result", out.to, fields["task_id"], fields["attempt"]))
            else:
                self.commands(self.state.handle(out))

    def commands(self, commands: list[Any]) -> None:
        for cmd in commands:
            if isinstance(cmd, Dispatch):
                cmd.worker.submit(cmd.task)
            elif isinstance(cmd, Ask):
                n = min(cmd.n, self.n_candidates - self.next_candidate)
                cands = [Candidate(self.next_candidate + i, {"C": float(self.next_candidate + i), "kernel": "rbf"})
                         for i in range(n)]
                self.next_candidate += n
                self.commands(self.state.handle(Proposed(cands, self.next_candidate >= self.n_candidates)))

    def run(self) -> float:
        """Seconds of CPU the master spent; the search runs to its end."""
        offer = Offer(SEARCH, [], [], 0, CID)
        self.table.start_search(offer, 0.0)
        start = time.perf_counter()
        self.commands(self.state.start())
        for i in range(self.n_workers):
            session = f"w{i}"
            fields = dict(worker_id=session, name=session, host="sim", pid=i + 10,
                          slots=self.slots, versions=local_versions(), contexts=[CID])
            route = session.encode()
            challenge = self.table_call(self.table.receive, route, self.message(session, "HELLO", **fields), 0.0)
            hello = self.message(session, "HELLO", **fields, nonce=challenge[0].fields["nonce"])
            self.outputs(self.table_call(self.table.receive, route, hello, 0.0))
            ready = self.message(session, "READY", search=SEARCH, context_id=CID, error=None)
            self.outputs(self.table_call(self.table.receive, route, ready, 0.0))
        self.at(HOUSEKEEPING, ("tick",))
        while not self.state.done and self.events:
            self.now, _, action = heapq.heappop(self.events)
            if action[0] == "tick":
                self.outputs(self.table_call(self.table.tick, self.now))
                self.at(self.now + HOUSEKEEPING, ("tick",))
            else:
                _, session, task_id, attempt = action
                msg = self.message(session, "RESULT", search=SEARCH, task_id=task_id, attempt=attempt,
                                   result=RESULT, failure=None)
                self.outputs(self.table_call(self.table.receive, session.encode(), msg, self.now))
        elapsed = time.perf_counter() - start
        assert self.state.done and self.state.n_tasks_done == self.n_candidates * FOLDS, "the search did not finish"
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.tasks} tasks ({FOLDS} folds a candidate), {args.slots} slot(s) a worker, virtual time")
    print(f"{'workers':>8} {'us/task':>9} {'table us/task':>14} {'virtual s':>10} {'wall s':>7}")
    for n in args.workers:
        sim = Simulation(n, args.tasks, args.slots)
        seconds = sim.run()
        per_task = seconds / args.tasks * 1e6
        print(f"{n:>8} {per_task:>9.1f} {sim.table_seconds / args.tasks * 1e6:>14.1f} {sim.now:>10.0f} "
              f"{seconds:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
