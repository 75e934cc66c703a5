"""``AutoWorkers``: the pool behind ``workers=N``, threads or processes chosen per search.

A search starts on N threads in this process (no start-up, no copy of the data). Fits
that release the GIL (numpy, BLAS, Cython kernels such as libsvm's) run in parallel
there. Fits that hold it (pure-Python estimators, and the Python around tiny fits)
take turns, and processes are faster: so the first tasks are measured, and when they
show the threads taking turns on the GIL the search moves to the process's warm pool
of N worker processes (:func:`~hpsearch.workers.local.warm_processes`, started once and
reused by every later search), without losing a task.

The measure, over the first ``2 N`` tasks and at least 0.2 s (``min_seconds``: a few
tasks of milliseconds are too short a window to tell the GIL from noise), is taken per
task on the thread that ran it: its wall time, its CPU time (``time.thread_time``) and,
on Linux, the time it was runnable but waiting for a core
(``/proc/thread-self/schedstat``). The rest of the wall
time the thread slept: a fit that only computes sleeps on nothing but the GIL. The
threads run in parallel when they kept at least ``0.65 N`` cores busy on average (CPU
time over wall time); they take turns on the GIL when they kept fewer and slept at
least 15% of their wall time; fewer cores busy without sleeping means other programs
load the machine. Threads taking turns on the GIL still keep about one core busy (the
GIL is almost always held, by one of them): when the threads kept less than
``0.4`` of a core running or runnable, the fits wait on something else (they sleep,
read files, wait for a device), processes would not make them faster, and the search
stays on threads.

Other programs loading the machine lower the first figure but not the second (a thread
that a busy machine keeps off its cores is runnable, not asleep), which is what keeps
the measure from moving a GIL-free search to processes on a loaded machine. While it
measures, the GIL's switch interval is raised from 5 to 25 ms
(:data:`PROBE_SWITCH_INTERVAL`, restored once the verdict is in): a thread waiting for
the GIL then waits asleep instead of waking every 5 ms to ask for it, which on a
loaded machine would keep it in the run queue. Where the run-queue time is unknown
(not Linux), the first figure decides alone.

A move pays only if the processes have time to make up for it. When the warm pool is
already running, the search moves at once (unless fewer than ``4 N`` tasks remain):
on the GIL's account, and also when the verdict is unclear (a loaded machine), where
processes get as much of the cores as threads do and more if the GIL was in the way,
but then only with at least ``10 N`` tasks left (the move reruns the N tasks the
threads are running).
When the pool must be started, only the GIL's account counts: the search moves once
the threads' remaining work is estimated at ``start_seconds`` (2 s, times the
threads' slowdown from waiting for a core: starting is slower on a loaded machine)
or more (the number of tasks is known from the search's candidates and folds), or,
when it is unknown (an adaptive strategy), once the search has already run that long
on threads. The processes start in the background while the threads go on. So a
small search never pays for starting processes.

The verdict is kept for the process's later searches of the same kind (the estimator's
class and its inner estimators', the data's type, shape and dtype, and a subsampling
search's training-set sizes: :func:`search_kind`;
the latest 256 kinds): a later search of a kind whose fits took turns on the GIL starts
on the warm pool at once when it is running and free (no tasks on threads, none run
twice), or else, unmeasured, starts it as soon as the work left pays for it; a kind
that ran in parallel on threads, or waited on something other than a core, stays on
threads unmeasured. An unclear verdict (a loaded machine) is not kept.
:func:`forget_verdicts` clears them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .._validation import check_integer
from ..evaluation import EvaluationContext
from .base import Emit, Task, WorkerJoined, WorkerLost
from .local import WarmProcesses, warm_pool_ready
from .threads import ThreadWorker, ThreadWorkers

logger = logging.getLogger(__name__)

__all__ = ["AutoWorkers", "ParallelProbe", "TaskTiming", "forget_verdicts", "search_kind", "thread_waiting"]

_T = TypeVar("_T")

_SCHEDSTAT = "/proc/thread-self/schedstat"
_schedstat_works = True

#: The GIL's switch interval while a probe measures. With CPython's 5 ms, a thread
#: waiting for the GIL wakes every 5 ms to ask for it, and on a loaded machine spends
#: those waits runnable, in the run queue, like a thread kept off the cores by other
#: programs; at 25 ms it waits asleep, which is what tells the two apart.
PROBE_SWITCH_INTERVAL = 0.025
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


def _probe_switch_interval(on: bool) -> None:
    """Raise the switch interval for the first probe measuring, restore it after the last."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if on:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                sys.setswitchinterval(max(_switch_saved, PROBE_SWITCH_INTERVAL))
            _switch_users += 1
        elif _switch_users > 0:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


def thread_waiting() -> float | None:
    """Seconds the calling thread has spent runnable but waiting for a core, in all.

    Read from Linux's ``/proc/thread-self/schedstat``; None where the system does not
    tell (then it is never asked again).

    Examples
    --------
    >>> waited = thread_waiting()
    >>> waited is None or waited >= 0.0
    True
    """
    global _schedstat_works
    if not _schedstat_works:
        return None
    try:
        with open(_SCHEDSTAT, "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        _schedstat_works = False
        return None


@dataclass(frozen=True, slots=True)
class TaskTiming:
    """One task as the thread that ran it saw it.

    ``wall`` and ``cpu`` (the thread's CPU time) in seconds; ``waiting``: seconds it was
    runnable but waiting for a core, None where unknown; ``end``: when it ended
    (``time.perf_counter``).
    """

    wall: float
    cpu: float
    waiting: float | None
    end: float


def run_timed(run: Callable[[], _T], on_timing: Callable[[TaskTiming], None]) -> _T:
    """``run()`` on this thread, then ``on_timing`` with how the thread saw it (also when
    it raised): what a probe measures of each task."""
    waited, cpu, wall = thread_waiting(), time.thread_time(), time.perf_counter()
    try:
        return run()
    finally:
        end, waited_after = time.perf_counter(), thread_waiting()
        waiting = None if waited is None or waited_after is None else waited_after - waited
        on_timing(TaskTiming(end - wall, time.thread_time() - cpu, waiting, end))


class ParallelProbe:
    """Decides from the first tasks' timings whether the search moves to processes.

    A pure state machine: ``record(timing)`` per finished task returns ``True`` once,
    when the move is due, and ``False`` otherwise. ``verdict`` says what the first
    ``2 n`` tasks showed (None before): ``"parallel"`` (the threads kept the cores
    busy: stay), ``"gil"`` (they took turns on the GIL: move when it pays),
    ``"waiting"`` (less than ``idle_threshold`` of a core running or runnable: the
    fits wait on a sleep, files or a device; stay) or
    ``"unclear"`` (few cores busy but no thread asleep: other programs load the
    machine, and processes would get no more of it; move only to warm processes,
    which cost little, and only with ``10 n`` tasks left). ``decided`` is True once nothing will change;
    ``known`` whether the verdict came from an earlier search (the ``known`` parameter).

    Parameters
    ----------
    n : int
        Threads running tasks.
    start : float
        When the search started (``time.perf_counter``).
    total : int or None
        Tasks the search will run; None when unknown.
    warm : bool
        Whether the warm processes are running already.
    start_seconds : float
        What starting the processes costs on an idle machine (times the threads'
        slowdown from waiting for a core): a move on the GIL's account waits until
        that much thread work remains (or, the total unknown, until the search ran
        that long). An ``"unclear"`` verdict moves only to running warm processes.
    min_seconds : float
        The verdict waits for a task ending this long after ``start`` at least, so
        that tasks of a few milliseconds are measured over more than noise.
    known : {None, "parallel", "gil", "waiting"}
        The verdict of an earlier search of the same kind (:func:`search_kind`): no
        verdict is taken. ``"gil"`` with ``warm`` and at least ``4 n`` tasks sets
        ``move`` at once (the search starts on the processes); ``"gil"`` without
        ``warm`` starts them once the work left pays, measured from the first ``n``
        tasks; the others stay on threads.
    busy_threshold, sleep_threshold, idle_threshold : float
        The threads run in parallel when they keep at least ``busy_threshold * n``
        cores busy; they take turns on the GIL when they keep fewer and sleep at
        least ``sleep_threshold`` of their wall time, but keep at least
        ``idle_threshold`` of a core running or runnable (verdict ``"waiting"``
        below it: the fits wait on something other than a core).

    Examples
    --------
    Two threads taking turns on the GIL: 0.1 s of CPU each per 0.2 s task, asleep
    the rest of the time; the warm processes are running, 100 tasks remain.

    >>> probe = ParallelProbe(n=2, start=0.0, total=104, warm=True)
    >>> timings = [TaskTiming(wall=0.2, cpu=0.1, waiting=0.0, end=t) for t in (0.2, 0.2, 0.4, 0.4)]
    >>> [probe.record(t) for t in timings]
    [False, False, False, True]
    >>> probe.verdict, probe.move
    ('gil', True)

    The same CPU time on a loaded machine: the threads waited for a core, not for the
    GIL. Processes would not be faster, only as fast: starting them is not worth it.

    >>> probe = ParallelProbe(n=2, start=0.0, total=1004, warm=False)
    >>> timings = [TaskTiming(wall=0.2, cpu=0.1, waiting=0.1, end=t) for t in (0.2, 0.2, 0.4, 0.4)]
    >>> [probe.record(t) for t in timings]
    [False, False, False, False]
    >>> probe.verdict, probe.decided
    ('unclear', True)

    Fits that sleep (or wait for files, a device): the threads are asleep, but keep
    no core busy. Processes would wait just as long: the search stays on threads.

    >>> probe = ParallelProbe(n=2, start=0.0, total=1004, warm=True)
    >>> timings = [TaskTiming(wall=0.2, cpu=0.001, waiting=0.0, end=t) for t in (0.2, 0.2, 0.4, 0.4)]
    >>> [probe.record(t) for t in timings]
    [False, False, False, False]
    >>> probe.verdict, probe.decided
    ('waiting', True)
    """

    def __init__(
        self,
        n: int,
        *,
        start: float,
        total: int | None = None,
        warm: bool = False,
        start_seconds: float = 2.0,
        min_seconds: float = 0.2,
        known: str | None = None,
        busy_threshold: float = 0.65,
        sleep_threshold: float = 0.15,
        idle_threshold: float = 0.4,
    ) -> None:
        if known not in (None, "parallel", "gil", "waiting"):
            raise ValueError(f"known must be None, 'parallel', 'gil' or 'waiting', got {known!r}")
        self.n = n
        self.needed = 2 * n
        self.min_seconds = min_seconds
        self.start = start
        self.total = total
        self.warm = warm
        self.start_seconds = start_seconds
        self.busy_threshold = busy_threshold
        self.sleep_threshold = sleep_threshold
        self.idle_threshold = idle_threshold
        self.count = 0
        self.wall = 0.0
        self.cpu = 0.0
        self.waiting: float | None = 0.0
        self.verdict: str | None = None
        self.decided = n < 2  # one thread never takes turns with another
        self.move = False
        self.known = known is not None and not self.decided
        if self.known:
            self.verdict = known
            self.decided = known != "gil"
            if known == "gil" and warm:
                self.decided = True
                self.move = total is None or total >= 2 * self.needed

    def record(self, timing: TaskTiming) -> bool:
        """Note one finished task; True when the search should move to processes now."""
        if self.decided:
            return False
        self.count += 1
        if self.verdict is None or self.known:  # known: measured only for the slowdown of a start
            self.wall += timing.wall
            self.cpu += timing.cpu
            self.waiting = None if self.waiting is None or timing.waiting is None else self.waiting + timing.waiting
        if self.verdict is None:
            if self.count < self.needed or timing.end - self.start < self.min_seconds:
                return False
            self.verdict = self._judge(timing.end)
            if self.verdict in ("parallel", "waiting"):
                self.decided = True
                return False
        if self.count < self.n:  # a verdict known from an earlier search: seconds per task need n tasks
            return False
        if self._move_pays(timing.end):
            self.decided = self.move = True
            logger.info("moving the search to %d local worker processes (%s)", self.n,
                        "warm" if self.warm else "starting them")
            return True
        return False

    def _judge(self, now: float) -> str:
        window = max(now - self.start, 1e-9)
        cores = self.cpu / window  # cores busy on average: n when the threads ran in parallel
        asleep = None
        if cores >= self.busy_threshold * self.n:
            verdict = "parallel"
        elif (self.cpu + (self.waiting or 0.0)) / window < self.idle_threshold:
            verdict = "waiting"  # not even one core's worth running or runnable: no GIL in the way
        elif self.waiting is None:  # no run-queue times: few cores busy must do
            verdict = "gil"
        else:
            asleep = max(0.0, self.wall - self.cpu - self.waiting) / max(self.wall, 1e-9)
            verdict = "gil" if asleep >= self.sleep_threshold else "unclear"
        logger.info("first %d tasks on %d threads: %.2f cores busy, asleep %s of their time: %s", self.count,
                    self.n, cores, "?" if asleep is None else f"{asleep:.0%}",
                    {"parallel": "they run in parallel", "gil": "they take turns on the GIL",
                     "unclear": "the machine is loaded",
                     "waiting": "the fits wait on something other than a core"}[verdict])
        return verdict

    def _move_pays(self, now: float) -> bool:
        if self.warm:
            # The move reruns the n tasks the threads are running: on the GIL's account
            # it pays for 4 n tasks left; on an unclear verdict, where it may win
            # nothing, only when they are at most a tenth of the work left.
            left = 2 * self.needed if self.verdict == "gil" else 10 * self.n
            pays = self.total is None or self.total - self.count >= left
        elif self.verdict != "gil":
            pays = False  # processes would get the same share of a loaded machine: no bet
        else:
            # Starting processes is slower on a loaded machine, by as much as the
            # threads' tasks were (time runnable over time running).
            slowdown = 1.0 if not self.waiting or self.cpu <= 0 else min(5.0, (self.cpu + self.waiting) / self.cpu)
            cost = self.start_seconds * max(1.0, slowdown)
            if self.total is None:
                return now - self.start >= cost
            per_task = (now - self.start) / self.count  # seconds of search per task, on threads
            pays = (self.total - self.count) * per_task >= cost
        self.decided = not pays  # too few tasks left for processes to win anything
        return pays


#: What the probes of this process found, by kind of search (:func:`search_kind`):
#: a later search of the same kind starts where it belongs, without a probe.
_VERDICTS: dict[tuple[Any, ...], str] = {}
_VERDICTS_KEPT = 256
_verdicts_lock = threading.Lock()


def search_kind(context: Any) -> tuple[Any, ...] | None:
    """What a probe's verdict holds for: the estimator's class and its inner estimators'
    (a pipeline's steps), the data's type, shape and dtype, and the training-set sizes
    of a search that subsamples (successive halving on ``n_samples``: its many small
    fits may take turns on the GIL where full-size fits of the same estimator run in
    parallel); None when unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> from sklearn.svm import SVC
    >>> kind = search_kind(SimpleNamespace(estimator=SVC(), X=np.zeros((10, 3))))
    >>> kind == search_kind(SimpleNamespace(estimator=SVC(C=2.0), X=np.ones((10, 3))))
    True
    >>> kind == search_kind(SimpleNamespace(estimator=SVC(), X=np.zeros((20, 3))))
    False
    >>> kind == search_kind(SimpleNamespace(estimator=SVC(), X=np.zeros((10, 3)), subsample_offsets={4: 5}))
    False
    """
    estimator, X = getattr(context, "estimator", None), getattr(context, "X", None)
    if estimator is None or X is None:
        return None
    try:
        inner = tuple(type(v) for v in estimator.get_params(deep=True).values() if hasattr(v, "fit"))
    except Exception:  # not a scikit-learn estimator: its class must do
        inner = ()
    shape = getattr(X, "shape", None)
    sizes = tuple(sorted(getattr(context, "subsample_offsets", None) or ()))
    return (type(estimator), inner, type(X), tuple(shape) if shape is not None else None,
            str(getattr(X, "dtype", "")), sizes)


def _known_verdict(kind: tuple[Any, ...] | None) -> str | None:
    if kind is None:
        return None
    with _verdicts_lock:
        return _VERDICTS.get(kind)


def _remember_verdict(kind: tuple[Any, ...], verdict: str) -> None:
    with _verdicts_lock:
        _VERDICTS.pop(kind, None)
        _VERDICTS[kind] = verdict
        while len(_VERDICTS) > _VERDICTS_KEPT:
            del _VERDICTS[next(iter(_VERDICTS))]


def forget_verdicts() -> None:
    """Forget what the probes of this process found: every later ``workers=N`` search probes again.

    Examples
    --------
    >>> forget_verdicts()
    """
    with _verdicts_lock:
        _VERDICTS.clear()


class _MeasuredThreadWorker(ThreadWorker):
    def __init__(self, *args: Any, on_timing: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_timing = on_timing
        self.measuring = True
        self.finished = 0  # tasks run here (a count read loosely, for the move)

    def _run(self, task: Task) -> None:
        if self.measuring:
            run_timed(lambda: self._run_counted(task), self._on_timing)
        else:
            self._run_counted(task)

    def _run_counted(self, task: Task) -> None:
        super()._run(task)
        self.finished += 1


class AutoWorkers(ThreadWorkers):
    """N local workers, threads or processes, chosen per search: ``workers=N``.

    ``run_search(workers=N)`` and the search classes' ``workers=N`` (and ``n_jobs=N``
    without ``workers``) use it. Each search starts on N threads and moves to N warm
    local processes when its first tasks show the threads taking turns on the GIL and
    the processes have time to pay for the move (see :mod:`hpsearch.workers.auto`).
    Scores are the same either way. For a fixed choice, give ``workers=ThreadWorkers(N)``
    (always threads), ``workers=warm_processes(N)`` (always the warm processes) or
    ``workers=LocalProcesses(N)`` (processes of its own).

    A search that prints a line per fit (``verbose`` above 1) stays on threads: the
    processes' output goes to their logs, not to this process's standard output.

    Parameters
    ----------
    n : int
        Number of fits run at once.
    inner_threads : int or None
        BLAS/OpenMP threads each fit may use; None means ``max(1, cores // n)``.
    start_seconds : float
        Starting the processes is worth it only for this much work left on threads.

    Attributes
    ----------
    moved : bool
        Whether the last search moved to processes.

    Examples
    --------
    >>> from hpsearch import AutoWorkers, run_search
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> pool = AutoWorkers(2)
    >>> result = run_search(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 3]},
    ...                     X, y, workers=pool, progress=False)
    >>> result.best_params_
    {'max_depth': 3}
    >>> pool.moved  # ten tiny fits: not worth starting processes
    False
    """

    def __init__(self, n: int, inner_threads: int | None = None, *, start_seconds: float = 2.0) -> None:
        super().__init__(check_integer("the number of workers", n, 1), inner_threads)
        self.start_seconds = float(start_seconds)
        self.moved = False
        self._lock = threading.Lock()
        self._mover: threading.Thread | None = None
        self._processes: WarmProcesses | None = None
        self._stopping = False
        self._switching = False
        self._judging = False

    def start(self, context: EvaluationContext, emit: Emit) -> None:
        from threadpoolctl import threadpool_limits

        from .threads import _POOL_IDS

        self.moved = False
        self._stopping = False
        self._context, self._emit = context, emit
        verbose = int(getattr(context, "verbose", 0) or 0) > 1  # the fits' lines must reach this output
        self._kind = None if verbose else search_kind(context)
        n_candidates = int(getattr(context, "n_candidates", 0) or 0)
        self._probe = ParallelProbe(
            self.n, start=time.perf_counter(), total=n_candidates * context.n_splits or None,
            warm=warm_pool_ready(self.n), start_seconds=self.start_seconds, known=_known_verdict(self._kind),
        )
        if verbose:
            self._probe.decided = True
        if self._probe.move and self._start_on_processes(context, emit):
            return
        self._limits = threadpool_limits(limits=self.inner_threads, user_api="blas")
        self._worker = _MeasuredThreadWorker(context, emit, self.n, name=f"threads-{next(_POOL_IDS)}",
                                             inner_threads=self.inner_threads, on_timing=self._timing)
        self._worker.measuring = self._switching = not self._probe.decided
        if self._switching and self._probe.verdict is None:
            _probe_switch_interval(True)
        else:
            self._switching = False
        self._judging = self._switching  # a verdict to remember once it is in
        emit(WorkerJoined(self._worker))

    def _start_on_processes(self, context: EvaluationContext, emit: Emit) -> bool:
        """Run the whole search on the warm processes: an earlier search of the same kind
        showed its fits taking turns on the GIL. False (stay on threads) if they fail."""
        logger.info("moving the search to %d local worker processes (warm) at its start: an earlier "
                    "search of the same estimator and data took turns on the GIL", self.n)
        processes = WarmProcesses(self.n)
        try:
            processes.start(context, emit)
        except Exception:
            logger.warning("could not start local worker processes; the search stays on threads", exc_info=True)
            self._probe.decided, self._probe.move = True, False
            return False
        self._processes, self.moved = processes, True
        return True

    def _timing(self, timing: TaskTiming) -> None:
        with self._lock:
            move = self._probe.record(timing) and not self._stopping
            if self._judging and self._probe.verdict is not None:
                # The verdict is in. It may come with the search's last task, after
                # stop() (which waits for the threads): it is kept all the same.
                self._judging = False
                if self._switching:
                    self._switching = False
                    _probe_switch_interval(False)
                if self._kind is not None and not self._probe.known and self._probe.verdict != "unclear":
                    _remember_verdict(self._kind, self._probe.verdict)
            if self._probe.decided and isinstance(self._worker, _MeasuredThreadWorker):
                self._worker.measuring = False
            if move:
                self._mover = threading.Thread(target=self._move, name="hpsearch-auto-move", daemon=True)
                self._mover.start()

    def _move(self) -> None:
        processes = WarmProcesses(self.n)
        with self._lock:
            if self._stopping:
                return
            self._processes = processes
        try:
            processes.start(self._context, self._emit)
        except Exception:
            logger.warning("could not start local worker processes; the search stays on threads", exc_info=True)
            return
        with self._lock:
            worker, stopping = self._worker, self._stopping
        if worker is None or stopping:
            return
        total = self._probe.total
        if total is not None and isinstance(worker, _MeasuredThreadWorker) and total - worker.finished <= 2 * self.n:
            # The threads are almost done (the processes took long to start): moving
            # would run their last tasks twice, and a copy left running at the end is
            # stopped by killing its warm process. The processes join beside the threads.
            logger.info("the threads are almost done: their tasks stay on them")
            return
        self.moved = True
        # The scheduler gives the threads' unfinished tasks to the processes; a thread
        # finishing one first is kept (the first result of a task counts).
        why = "the threads took turns on the GIL" if self._probe.verdict == "gil" else "few cores busy on threads"
        self._emit(WorkerLost(worker.name, f"{why}: moved to local processes"))
        worker.close(0.0)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            mover = self._mover
            if self._switching:
                self._switching = False
                _probe_switch_interval(False)
        if mover is not None:
            mover.join(300.0)
        self._mover = None
        if self._processes is not None:
            self._processes.stop()
            self._processes = None
        super().stop()

    def __repr__(self) -> str:
        return f"AutoWorkers({self.n})"
