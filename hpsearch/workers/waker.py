"""Waking a poll loop from other threads: :class:`Waker`."""

from __future__ import annotations

import os

__all__ = ["Waker"]


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
