"""Waking a poll loop from other threads: :class:`Waker`."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["Waker"]


def _gil_holding_write() -> Any:
    """libc's ``write`` called without releasing the GIL, or None where unavailable."""
    try:
        import ctypes

        write = ctypes.PyDLL(None).write
    except (ImportError, OSError, AttributeError):
        return None
    write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    write.restype = ctypes.c_ssize_t
    return write


_WRITE = _gil_holding_write()


class Waker:
    """A pipe whose read end a poll loop watches; other threads call :meth:`wake`.

    A burst of wake-ups costs one write and one wake-up: a byte is written only when
    none is pending, and the loop calls :meth:`drain` *before* it empties the queue it
    was woken for, so a wake-up that skipped its write is never missed (its item was
    queued before the loop drained).

    Examples
    --------
    >>> import select
    >>> waker = Waker()
    >>> waker.wake(); waker.wake()
    >>> select.select([waker.fileno()], [], [], 0)[0] == [waker.fileno()]
    True
    >>> waker.drain()
    >>> select.select([waker.fileno()], [], [], 0)[0]
    []
    >>> waker.nudge()  # the same wake-up, keeping the GIL
    >>> select.select([waker.fileno()], [], [], 0)[0] == [waker.fileno()]
    True
    >>> waker.close()
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._pending = False

    def fileno(self) -> int:
        """The file descriptor to poll for reading."""
        return self._read

    def wake(self) -> None:
        """Wake the loop (any thread; never blocks)."""
        if self._pending:  # the loop has a byte to read and will drain its queue
            return
        self._pending = True
        try:
            os.write(self._write, b"!")
        except OSError:
            pass  # the pipe is full (a wake-up is pending) or closed (shutting down)

    def nudge(self) -> None:
        """Wake the loop without giving up the GIL: the loop's thread runs when the
        interpreter next switches threads (its switch interval), not at once.

        ``os.write`` releases the GIL, and the woken loop then takes it: a thread that
        reports many tiny results would hand the GIL over for each one. The write here
        keeps the GIL (a ctypes call through ``PyDLL``), so the loop wakes, waits for the
        switch, and finds every result finished meanwhile. Falls back to :meth:`wake`.
        """
        if self._pending:
            return
        if _WRITE is None:
            self.wake()
            return
        self._pending = True
        _WRITE(self._write, b"!", 1)  # -1 (full or closed) is fine, as in wake

    def drain(self) -> None:
        """Consume the pending wake-ups (the loop's thread, before it drains its queue)."""
        try:
            os.read(self._read, 65536)
        except OSError:
            pass
        self._pending = False

    def close(self) -> None:
        """Close the pipe; later wake-ups do nothing (the numbers may be reused)."""
        self._pending = True
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
