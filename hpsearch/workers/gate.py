"""What the master's I/O thread lets through before it authenticates: :class:`InboundGate`.

Without I/O: the router asks :meth:`InboundGate.admit` about each inbound message
(its routing id, size, frame count, and whether that route belongs to a worker that
completed its handshake) before it spends anything on it, and reports refusals to
:meth:`InboundGate.refuse`, which counts them and returns at most one log line per
``log_interval`` seconds. So junk costs a receive and a counter, not a signature
check and a log line each, and the state kept per stranger is bounded.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

__all__ = ["InboundGate", "STRANGER_MESSAGES", "STRANGER_BYTES", "MAX_STRANGERS"]

#: Messages a route without a completed handshake may send (HELLO, HELLO with nonce, ...).
STRANGER_MESSAGES = 8
#: Bytes it may send in all (a HELLO is a few hundred bytes; its contexts list a few KiB).
STRANGER_BYTES = 256 * 1024
#: Routes tracked without a handshake; the oldest is forgotten first.
MAX_STRANGERS = 4096


@dataclass
class _Budget:
    messages: int
    nbytes: int


class InboundGate:
    """Budgets for routes that have not completed a handshake; counted refusals.

    Parameters
    ----------
    max_message_size : int
        The whole message (all its frames), in bytes.
    frames : int
        Frames in a worker message (after the routing id).
    log_interval : float
        Seconds between two log lines about refused traffic.

    Examples
    --------
    >>> gate = InboundGate(1000, frames=1)
    >>> gate.admit(b"r", nbytes=10, nframes=1, known=False)
    >>> gate.admit(b"r", nbytes=5000, nframes=1, known=False)
    'oversized'
    >>> gate.refuse("oversized", now=0.0)
    'refused 1 inbound message(s) in the last 0 s: oversized 1'
    >>> gate.refuse("oversized", now=1.0) is None  # counted, not logged again yet
    True
    """

    def __init__(self, max_message_size: int, *, frames: int = 1, log_interval: float = 10.0,
                 stranger_messages: int = STRANGER_MESSAGES, stranger_bytes: int = STRANGER_BYTES,
                 max_strangers: int = MAX_STRANGERS) -> None:
        self.max_message_size = max_message_size
        self.frames = frames
        self.log_interval = log_interval
        self.stranger_messages = stranger_messages
        self.stranger_bytes = stranger_bytes
        self.max_strangers = max_strangers
        self.refused: collections.Counter[str] = collections.Counter()  # since the start
        self._pending: collections.Counter[str] = collections.Counter()  # since the last log line
        self._last_log: float | None = None
        self._strangers: collections.OrderedDict[bytes, _Budget] = collections.OrderedDict()

    def admit(self, route: bytes, nbytes: int, nframes: int, known: bool) -> str | None:
        """None to go on (authenticate, decode), else why the message is refused.

        ``known``: the route is a worker session's that completed its handshake.
        """
        if nframes != self.frames:
            return "frames"
        if nbytes > self.max_message_size:
            return "oversized"
        if known:
            self._strangers.pop(route, None)
            return None
        budget = self._strangers.get(route)
        if budget is None:
            budget = self._strangers[route] = _Budget(self.stranger_messages, self.stranger_bytes)
            while len(self._strangers) > self.max_strangers:
                self._strangers.popitem(last=False)
        budget.messages -= 1
        budget.nbytes -= nbytes
        if budget.messages < 0 or budget.nbytes < 0:
            return "over budget"
        return None

    def refuse(self, reason: str, now: float) -> str | None:
        """Count a refusal; a summary line to log, at most once per ``log_interval`` s."""
        self.refused[reason] += 1
        self._pending[reason] += 1
        if self._last_log is not None and now - self._last_log < self.log_interval:
            return None
        since = 0.0 if self._last_log is None else now - self._last_log
        self._last_log = now
        line = (f"refused {sum(self._pending.values())} inbound message(s) in the last {since:.0f} s: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self._pending.items())))
        self._pending.clear()
        return line
