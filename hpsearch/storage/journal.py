"""The journal of a running search: what it writes, when, and how a rerun resumes.

What is recorded, per search in the file:

* every ``ask`` and ``tell`` the strategy received, in the order it received them
  (the ``ops`` table), with each proposed candidate's parameters;
* every fold result, as the master receives it;
* the workers that joined and left, and each run (start, heartbeat, end, outcome).

When: the pools' and strategy's threads only put records on a queue (a microsecond
on the path of a result); one writer thread owns the SQLite connection, writes
whatever has queued up within 20 ms of the first record and commits it in one
transaction — so a busy search commits many results at once (one commit for each
result costs more than a tiny task), and an idle one within moments.

Records are written in the order they happened and every commit covers a prefix of
that order: a stored score has its fold results stored with or before it, a stored
proposal every score told before it. So the file always holds a state the search
was in, whenever the process dies. A strategy that learns from scores (Bayesian,
adaptive) is told a score only once it is committed, so nothing it learnt can be
lost; the tells of grid and random search (whose proposals ignore scores) are not
recorded at all, and a resumed run tells them again.

Resuming: the strategy is built afresh and replays the recorded asks and tells, in
order; a deterministic strategy (grid, random and Bayesian search with a fixed or
stored seed) proposes the same candidates again, which is checked. The candidates it
proposed before are handed to the scheduler first, with their recorded fold results
(:class:`~hpsearch.scheduler.state.SchedulerState` records those instead of running
them), so only the tasks with no committed result run again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..evaluation import EvaluationContext, FoldResult
from ..strategies.base import Candidate, ListStrategy, Strategy
from ..workers.base import Results, Task, TaskFinished, WorkerJoined, WorkerLost
from ._db import StorageError, connect_writer
from .fingerprint import Definition, data_digest, describe

logger = logging.getLogger(__name__)

__all__ = ["SearchJournal", "open_journal", "search_definition", "DEFAULT_NAME"]

#: The name of a search stored without one.
DEFAULT_NAME = "default"
_HEARTBEAT_S = 1.0
#: A commit waits this long for more records (a flush or the end of the run wakes it).
_COMMIT_INTERVAL_S = 0.02
_MAX_BATCH = 5000
_SEEDED = ("random", "bayes")


def search_definition(context: EvaluationContext, space: Any, strategy: Any, random_state: Any) -> Definition:
    """The components that decide a search's results (see :mod:`.fingerprint`).

    ``strategy``: the text that names the strategy and its settings, as each search
    class writes it (``"grid"``, ``"random(n_iter=10)"``...), or a strategy object.
    """
    from ..space import Categorical

    subspaces = []
    for sub in space.subspaces:
        dims = ", ".join(
            f"{name!r}: "
            + (f"Categorical({describe(list(dim.choices))})" if isinstance(dim, Categorical) else describe(dim))
            for name, dim in sub.items()
        )
        subspaces.append("{" + dims + "}")
    if isinstance(strategy, str):
        strategy_text = strategy
    else:
        strategy_text = f"{describe(type(strategy))}: {describe(strategy)}"
    X, y = context.X, context.y
    shape = getattr(X, "shape", None) or (len(X),)
    splits = [a for pair in context.splits for a in pair]
    texts = {
        "estimator": describe(context.estimator),
        "space": subspaces[0] if len(subspaces) == 1 else "[" + ", ".join(subspaces) + "]",
        "strategy": strategy_text,
        # grid search draws no random number: its seed is not part of it
        "random_state": "unused" if strategy == "grid" else describe(random_state),
        "cv": f"{len(context.splits)} splits",
        "data": f"X {type(X).__name__} of shape {tuple(shape)}, y {type(y).__name__}",
        "fit_params": describe(sorted(context.fit_params)),
        "scoring": describe(context.scorers),
        "evaluation": f"error_score={context.error_score!r}, return_train_score={context.return_train_score}",
    }
    digests = {
        "cv": data_digest(*splits),
        "data": data_digest(X, y),
        "fit_params": data_digest(*[context.fit_params[k] for k in sorted(context.fit_params)])
        + describe(sorted(context.fit_params)),
    }
    from .fingerprint import _digest

    return Definition(texts, {k: _digest(v) for k, v in digests.items()})


def open_journal(
    storage: Any,
    name: str | None,
    definition: Definition,
    *,
    n_splits: int,
    seeded: bool = False,
    seed: int | None = None,
) -> SearchJournal:
    """Open ``name`` in the file ``storage``, creating it or checking it is the same search.

    ``seeded``: the strategy draws random numbers and no seed was given; a seed is then
    drawn once (or ``seed`` is used), stored, and the same one used by every rerun
    (:attr:`SearchJournal.seed`).
    Raises :class:`StorageError` before any fit when the file cannot be used or the
    stored search under that name has another definition.
    """
    name = DEFAULT_NAME if name is None else name
    if not isinstance(name, str) or not name:
        raise StorageError(f"name must be a non-empty string (or None for {DEFAULT_NAME!r}), got {name!r}")
    path, conn = connect_writer(storage)
    try:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "SELECT id, definition, n_splits, seed FROM searches WHERE name=?", (name,)
        ).fetchone()
        if row is None:
            if seeded and seed is None:
                seed = random.SystemRandom().randrange(2**31 - 1)
            elif not seeded:
                seed = None
            cur = conn.execute(
                "INSERT INTO searches (name, fingerprint, definition, n_splits, score_key, score_names, seed, created)"
                " VALUES (?, ?, ?, ?, '', '[]', ?, ?)",
                (name, definition.fingerprint, definition.to_json(), n_splits, seed, time.time()),
            )
            search_id = int(cur.lastrowid or 0)
            logger.info("new search %r in %s", name, path)
        else:
            search_id, stored_json, stored_splits, stored_seed = row
            stored = Definition.from_json(stored_json)
            differences = stored.differences(definition)
            if differences:
                others = [r[0] for r in conn.execute("SELECT name FROM searches ORDER BY id")]
                raise StorageError(
                    f"the search {name!r} in {str(path)!r} was stored with another definition, so it "
                    "cannot be resumed by this call:\n  " + "\n  ".join(differences) + "\n"
                    f"To start a new search in the same file, pass another name "
                    f"(searches in this file: {others}); or use another storage file"
                )
            if seeded and seed is not None and stored_seed != seed:
                raise StorageError(
                    f"the search {name!r} in {str(path)!r} was stored with seed {stored_seed}, not {seed}; "
                    "another process created it meanwhile: run the call again"
                )
            seed = stored_seed
            if seeded and seed is None:  # cannot happen unless the file was edited
                raise StorageError(f"the search {name!r} in {str(path)!r} has no stored seed")
            logger.info("resuming search %r from %s", name, path)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        raise
    return SearchJournal(path, conn, search_id, name, n_splits, seed if seeded else None)


class SearchJournal:
    """The record of one search in a storage file, and its writer thread.

    Made by :func:`open_journal`; :func:`hpsearch.scheduler.run_scheduler` calls
    :meth:`begin`, passes its pools :meth:`recording`, and calls :meth:`end`.
    """

    def __init__(
        self, path: Any, conn: sqlite3.Connection, search_id: int, name: str, n_splits: int, seed: int | None
    ) -> None:
        self.path = path
        self.name = name
        self.search_id = search_id
        self.n_splits = n_splits
        #: The seed to use instead of ``random_state=None`` (None: use the caller's).
        self.seed = seed
        self.run_id: int | None = None
        self.n_recovered_tasks = 0
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wake = threading.Event()  # a flush or the end: commit now
        self._stopped = threading.Event()  # the end of the run is committed
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._task_of: Callable[[int], tuple[int, int] | None] = lambda task_id: None
        self._seq = 0

    # -- the scheduler's side ----------------------------------------------------------

    def begin(
        self,
        strategy: Strategy,
        *,
        score_key: str,
        score_names: list[str],
        task_of: Callable[[int], tuple[int, int] | None],
    ) -> tuple[Strategy, dict[tuple[int, int], FoldResult]]:
        """Start a run: replay the stored history into ``strategy``, start the writer.

        ``task_of(task_id)`` names a task's ``(candidate_id, fold)``: the CV fold, not
        the split it ran on (an adaptive search's subsampled copies of the folds follow
        them), as results are stored and recovered by CV fold.

        Returns the strategy to use (it hands out the stored candidates first and
        records what it is asked and told) and the stored fold results by
        ``(candidate_id, fold)``.
        """
        conn = self._conn
        self._check_not_running()
        recovered, told = self._replay(strategy)
        known = self._known_results({c.id for c in recovered})
        self.n_recovered_tasks = len(known)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE searches SET total=?, score_key=?, score_names=? WHERE id=?",
            (strategy.total, score_key, json.dumps(score_names), self.search_id),
        )
        now = time.time()
        cur = conn.execute(
            "INSERT INTO runs (search_id, started, heartbeat, status, pid, host) VALUES (?, ?, ?, 'running', ?, ?)",
            (self.search_id, now, now, os.getpid(), socket.gethostname()),
        )
        conn.execute("COMMIT")
        self.run_id = int(cur.lastrowid or 0)
        if recovered:
            logger.info(
                "search %r: %d candidate(s) and %d fold result(s) recovered from %s",
                self.name, len(recovered), len(known), self.path,
            )
        self._task_of = task_of
        self._thread = threading.Thread(target=self._write_loop, name="hpsearch-journal", daemon=True)
        self._thread.start()
        return _JournaledStrategy(strategy, self, recovered, told), known

    def recording(self, emit: Callable[[Any], None]) -> Callable[[Any], None]:
        """``emit`` that first queues results and worker events for the journal."""
        put = self._queue.put
        clock = time.time

        def journaled_emit(event: Any) -> None:
            if type(event) is TaskFinished:
                put(("result", event, clock()))
            elif type(event) is Results:
                now = clock()
                for each in event.events:
                    if type(each) is TaskFinished:
                        put(("result", each, now))
            elif type(event) is WorkerJoined:
                put(("joined", event.worker.name, event.worker.slots, clock()))
            elif type(event) is WorkerLost:
                put(("lost", event.worker, event.reason, clock()))
            emit(event)

        return journaled_emit

    def check(self) -> None:
        """Raise :class:`StorageError` if writing the file failed (the search then stops)."""
        if self._error is not None:
            raise StorageError(f"writing storage file {str(self.path)!r} failed: {self._error}")

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything queued so far is committed; raise if the writer failed."""
        if self._error is not None:
            raise StorageError(f"writing storage file {str(self.path)!r} failed: {self._error}")
        done = threading.Event()
        self._queue.put(("flush", done))
        self._wake.set()
        while not done.wait(0.5):
            if self._error is not None or self._thread is None or not self._thread.is_alive():
                break
            timeout -= 0.5
            if timeout <= 0:
                raise StorageError(f"writing storage file {str(self.path)!r} takes too long (locked?)")
        if self._error is not None:
            raise StorageError(f"writing storage file {str(self.path)!r} failed: {self._error}")

    def end(self, error: BaseException | None = None, timeout: float = 60.0) -> None:
        """Commit what is queued, record how the run ended, close the file."""
        if error is None:
            status, text = "finished", None
        elif isinstance(error, KeyboardInterrupt):
            status, text = "interrupted", "KeyboardInterrupt"
        else:
            status, text = "failed", f"{type(error).__name__}: {error}"
        if self._thread is None:
            self.close()
            return
        self._queue.put(("stop", status, text))
        self._wake.set()
        # Wait for the last commit only: the writer closes the file after it, in the
        # background (closing checkpoints the log into the file, an fsync).
        if not self._stopped.wait(timeout):
            logger.error("the journal writer did not commit the end of the run within %.0f s", timeout)

    def close(self) -> None:
        """Close the file of a journal that never began (an error before the search)."""
        if self._thread is None:
            try:
                self._conn.close()
            except sqlite3.Error:
                logger.debug("closing the storage file failed", exc_info=True)

    def _check_not_running(self) -> None:
        from .read import STALE_AFTER_S, _status

        row = self._conn.execute(
            "SELECT id, started, heartbeat, ended, status, error, pid, host FROM runs "
            "WHERE search_id=? ORDER BY id DESC LIMIT 1",
            (self.search_id,),
        ).fetchone()
        if row is None:
            return
        run = dict(zip(("id", "started", "heartbeat", "ended", "status", "error", "pid", "host"), row))
        if _status(run) == "running":
            raise StorageError(
                f"the search {self.name!r} in {str(self.path)!r} is running now (process {run['pid']} on "
                f"{run['host']}, its last sign of life {time.time() - run['heartbeat']:.0f} s ago); two runs "
                f"would record it twice. Wait for it to end (a killed run counts as ended after "
                f"{STALE_AFTER_S:.0f} s without a sign of life, or at once on this machine), or use another name"
            )

    # -- replay ---------------------------------------------------------------------------

    def _replay(self, strategy: Strategy) -> tuple[list[Candidate], set[int]]:
        conn = self._conn
        keys = dict(conn.execute(
            "SELECT candidate_id, params_key FROM candidates WHERE search_id=?", (self.search_id,)
        ).fetchall())
        ops = conn.execute(
            "SELECT seq, kind, n, candidate_ids, candidate_id, score FROM ops WHERE search_id=? ORDER BY seq",
            (self.search_id,),
        ).fetchall()
        recovered: list[Candidate] = []
        told: set[int] = set()
        for seq, kind, n, ids_json, cid, score in ops:
            self._seq = seq + 1
            if kind in ("ask", "ask_idle"):  # ask_idle: work for idle slots (ASHA)
                got = strategy.ask(n) if kind == "ask" else strategy.ask_idle(n)  # type: ignore[attr-defined]
                want = json.loads(ids_json)
                if [c.id for c in got] != want or any(describe(c.params) != keys.get(c.id) for c in got):
                    stored = [(i, keys.get(i)) for i in want]
                    now = [(c.id, describe(c.params)) for c in got]
                    raise StorageError(
                        f"resuming search {self.name!r}: the strategy did not propose the stored "
                        f"candidates again (stored {stored}, now {now}); it is not deterministic. "
                        "Give it a fixed random_state, or start a new search (another name)"
                    )
                recovered.extend(got)
            else:
                strategy.tell(cid, float("nan") if score is None else score)
                told.add(cid)
        return recovered, told

    def _known_results(self, candidate_ids: set[int]) -> dict[tuple[int, int], FoldResult]:
        rows = self._conn.execute(
            "SELECT candidate_id, fold, fit_time, score_time, n_test_samples, test_scores, train_scores, error "
            "FROM results WHERE search_id=?",
            (self.search_id,),
        ).fetchall()
        known = {}
        for cid, fold, fit_time, score_time, n_test, test, train, error in rows:
            if cid in candidate_ids and 0 <= fold < self.n_splits:
                known[(cid, fold)] = FoldResult(
                    test_scores=json.loads(test),
                    train_scores=None if train is None else json.loads(train),
                    fit_time=fit_time,
                    score_time=score_time,
                    n_test_samples=n_test,
                    error=error,
                )
        return known

    # -- the writer thread ----------------------------------------------------------------

    def _write_loop(self) -> None:
        last_beat = time.monotonic()
        while True:
            try:
                batch = [self._queue.get(timeout=_HEARTBEAT_S)]
            except queue.Empty:
                batch = []
            else:
                self._wake.wait(_COMMIT_INTERVAL_S)  # let more records come: one commit for all
                self._wake.clear()
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            flushes = [item[1] for item in batch if item[0] == "flush"]
            stop = next((item for item in batch if item[0] == "stop"), None)
            try:
                if self._error is None:
                    beat = time.monotonic() - last_beat >= _HEARTBEAT_S
                    if beat:
                        last_beat = time.monotonic()
                    if batch or beat:
                        self._write(batch, beat)
            except BaseException as exc:  # disk full, file locked for too long...
                logger.exception("writing storage file %s failed", self.path)
                self._error = exc
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
            for event in flushes:
                event.set()
            if stop is not None:
                self._stopped.set()
                try:
                    self._conn.close()
                except sqlite3.Error:
                    logger.debug("closing the storage file failed", exc_info=True)
                return

    def _write(self, batch: list[tuple[Any, ...]], beat: bool) -> None:
        conn = self._conn
        sid, run = self.search_id, self.run_id
        results: list[tuple[Any, ...]] = []
        ops: list[tuple[Any, ...]] = []
        cands: list[tuple[Any, ...]] = []
        tells: list[tuple[Any, ...]] = []
        conn.execute("BEGIN IMMEDIATE")
        for item in batch:
            kind = item[0]
            if kind == "result":
                event, when = item[1], item[2]
                task = self._task_of(event.task_id)
                if task is None:
                    continue
                candidate_id, fold = task
                r = event.result
                results.append((
                    sid, candidate_id, fold, run, event.worker, event.attempt, when,
                    r.fit_time, r.score_time, r.n_test_samples, _scores_json(r.test_scores),
                    None if r.train_scores is None else _scores_json(r.train_scores), r.error,
                ))
            elif kind in ("ask", "ask_idle"):
                _, n, candidates, when = item
                ops.append((sid, self._seq, kind, n, json.dumps([c.id for c in candidates]), None, None))
                self._seq += 1
                for c in candidates:
                    cands.append((sid, c.id, json.dumps(_jsonable(c.params)), describe(c.params), when))
            elif kind == "tell":
                _, cid, score, when = item
                stored_score = score if math.isfinite(score) else None
                ops.append((sid, self._seq, "tell", None, None, cid, stored_score))
                self._seq += 1
                tells.append((stored_score, when, sid, cid))
            elif kind == "joined":
                _, name, slots, when = item
                conn.execute(
                    "INSERT OR REPLACE INTO workers (search_id, run_id, name, slots, joined) VALUES (?, ?, ?, ?, ?)",
                    (sid, run, name, slots, when),
                )
            elif kind == "lost":
                _, name, reason, when = item
                conn.execute(
                    "UPDATE workers SET lost=?, reason=? WHERE run_id=? AND name=?", (when, reason, run, name)
                )
            elif kind == "stop":
                _, status, text = item
                conn.execute(
                    "UPDATE runs SET status=?, error=?, ended=?, heartbeat=? WHERE id=?",
                    (status, text, time.time(), time.time(), run),
                )
        if cands:
            conn.executemany("INSERT OR IGNORE INTO candidates VALUES (?, ?, ?, ?, ?, NULL, NULL)", cands)
        if ops:
            conn.executemany("INSERT INTO ops VALUES (?, ?, ?, ?, ?, ?, ?)", ops)
        if tells:
            conn.executemany("UPDATE candidates SET score=?, told=? WHERE search_id=? AND candidate_id=?", tells)
        if results:
            conn.executemany("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", results)
        if beat:
            conn.execute("UPDATE runs SET heartbeat=? WHERE id=? AND status='running'", (time.time(), run))
        conn.execute("COMMIT")

    def _put(self, item: tuple[Any, ...]) -> None:
        self._queue.put(item)


_JSON_KEYS: dict[str, str] = {}


def _scores_json(scores: dict[str, float]) -> str:
    """``json.dumps(scores)``, several times quicker (it runs once per fold result).

    Examples
    --------
    >>> _scores_json({"score": 0.5, "f1": float("nan")})
    '{"score": 0.5, "f1": NaN}'
    """
    parts = []
    for key, value in scores.items():
        quoted = _JSON_KEYS.get(key)
        if quoted is None:
            quoted = _JSON_KEYS[key] = json.dumps(str(key))
        value = float(value)
        text = repr(value) if math.isfinite(value) else "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
        parts.append(f"{quoted}: {text}")
    return "{" + ", ".join(parts) + "}"


def _jsonable(value: Any) -> Any:
    """``value`` as JSON for people and charts: numbers, strings, None; else its text."""
    if type(value) is dict and all(
        type(v) in (int, str, bool, type(None)) or (type(v) is float and math.isfinite(v)) for v in value.values()
    ):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return describe(value)


class _JournaledStrategy:
    """The strategy of a journaled search: stored candidates first, asks and tells recorded."""

    def __init__(self, inner: Strategy, journal: SearchJournal, recovered: list[Candidate], told: set[int]) -> None:
        self._inner = inner
        self._journal = journal
        self._recovered = list(recovered)
        self._told = set(told)
        # Proposals fixed up front (grid, random) do not depend on scores: their tells
        # need not be replayed, so they are not recorded (a resumed run tells them again).
        self._learns = not isinstance(inner, ListStrategy)
        ask_idle = getattr(inner, "ask_idle", None)
        if callable(ask_idle):  # only then does the scheduler ask for idle slots' work

            def recorded_ask_idle(n: int) -> list[Candidate]:
                out = list(ask_idle(n))
                self._journal._put(("ask_idle", n, out, time.time()))
                return out

            self.ask_idle = recorded_ask_idle

    def ask(self, n: int) -> list[Candidate]:
        if self._recovered:
            out = self._recovered[:n]
            del self._recovered[:n]
            return out
        out = self._inner.ask(n)
        self._journal._put(("ask", n, list(out), time.time()))
        return out

    def tell(self, candidate_id: int, score: float) -> None:
        if candidate_id in self._told:  # replayed already
            self._told.discard(candidate_id)
            return
        if self._learns:  # the score and the results behind it are on disk before it is learnt
            self._journal._put(("tell", candidate_id, float(score), time.time()))
            self._journal.flush()
        else:
            self._journal.check()
        self._inner.tell(candidate_id, score)

    @property
    def finished(self) -> bool:
        return not self._recovered and bool(self._inner.finished)

    @property
    def total(self) -> int | None:
        return self._inner.total

    def __repr__(self) -> str:
        return repr(self._inner)
