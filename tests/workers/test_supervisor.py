"""The restart rules of local worker processes, in virtual time (no process started)."""

from __future__ import annotations

from hpsearch.workers.supervisor import Supervisor


def test_every_slot_starts_at_once():
    assert Supervisor(3).due(0.0) == [0, 1, 2]


def test_a_process_that_dies_before_joining_again_and_again_waits_longer_each_time():
    sup = Supervisor(1, backoff_base=0.5, backoff_cap=3.0, healthy_after=10.0)
    now, waits = 0.0, []
    for pid in range(100, 106):
        sup.started(0, pid, now)
        now += 1.0
        sup.exited(pid, -9, now)
        restart = now
        while not sup.due(restart):
            restart += 0.25
        waits.append(restart - now)
        now = restart
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert sup.failure is None  # killed, not broken: it keeps being replaced


def test_a_process_that_joined_is_replaced_at_once_however_short_its_life():
    sup = Supervisor(1, backoff_base=0.5)
    for pid in range(100, 105):
        sup.started(0, pid, float(pid))
        sup.joined(pid)
        sup.exited(pid, -6, pid + 0.5)
        assert sup.due(pid + 0.5) == [0]


def test_a_long_life_resets_the_backoff():
    sup = Supervisor(1, backoff_base=0.5, healthy_after=10.0)
    sup.started(0, 1, 0.0)
    sup.exited(1, -9, 1.0)
    sup.started(0, 2, 1.5)
    sup.exited(2, -9, 60.0)  # never joined, but lived long
    assert sup.due(60.0) == [0]


def test_a_process_the_pool_stopped_is_replaced_at_once():
    sup = Supervisor(2, backoff_base=5.0)
    sup.started(0, 1, 0.0)
    sup.started(1, 2, 0.0)
    sup.exited(2, -9, 1.0, stopped=True)
    assert sup.due(1.0) == [1]


def test_a_slot_that_cannot_start_fails_the_pool():
    sup = Supervisor(2, backoff_base=0.0, max_start_failures=3)
    sup.started(1, 1, 0.0)
    sup.joined(1)
    for pid in (10, 11, 12):
        sup.started(0, pid, 0.0)
        assert sup.failure is None
        sup.exited(pid, 2, 0.5)  # e.g. an import error, before HELLO
    assert sup.failure is not None and "exited with code 2 before joining (3 time(s)" in sup.failure
    assert sup.due(100.0) == []


def test_a_pool_whose_first_process_cannot_start_fails_at_once():
    sup = Supervisor(2)
    sup.started(0, 10, 0.0)
    sup.exited(10, 1, 2.0)
    assert sup.failure is not None and "code 1" in sup.failure


def test_killed_before_joining_is_not_a_broken_start():
    sup = Supervisor(1, backoff_base=0.0, max_start_failures=2)
    for pid in (10, 11, 12):
        sup.started(0, pid, 0.0)
        sup.exited(pid, -9, 0.5)
    assert sup.failure is None and sup.due(1.0) == [0]
