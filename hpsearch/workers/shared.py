"""A context's large arrays in shared memory, for workers on the master's machine.

Workers on another machine receive the whole context over the wire, one copy each.
Workers on the master's own machine need not: the master copies the context's large
out-of-band buffers (at least :data:`SHARED_THRESHOLD` bytes, joblib's ``max_nbytes``)
once into a :class:`Segment`, and each such worker maps them read-only instead of
receiving them. Only the small frames (msgpack header, pickle stream, small buffers)
still travel, so N local workers hold the data once between them, as joblib's
memmapped arrays are held once by loky's workers.

A segment is an anonymous, sealed memory file (``memfd_create`` with
``F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK``): nobody can change its bytes once
written, it has no name in any file system (nothing in ``/dev/shm`` to leak, even
when the master is killed outright), and its memory goes back to the system when the
master has closed it and the last worker has unmapped it. A worker opens it as
``/proc/<master pid>/fd/<fd>``, which works only for a process of the same user in
the same process namespace on the same boot; it checks the file's name (random per
segment), its seals and its size before mapping it, and anything else makes it fall
back to receiving the bytes. The worker still hashes the mapped bytes with the rest,
so the context's content id is checked exactly as for a transfer.

Linux only (``memfd_create`` and ``/proc``); elsewhere :func:`host_id` is None and
every worker receives the data.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import secrets
import sys
from collections.abc import Sequence
from typing import Any

import msgpack

__all__ = ["SHARED_THRESHOLD", "Segment", "SegmentCache", "SharedMemoryUnavailable", "attach", "host_id",
           "shared_frames"]

logger = logging.getLogger(__name__)

#: Out-of-band buffers of at least this many bytes are shared (joblib's ``max_nbytes``
#: default, 1 MB); smaller ones travel, where a copy costs less than a mapping.
SHARED_THRESHOLD = 1 << 20
#: Each shared buffer starts on a page, so arrays rebuilt on it are aligned.
_ALIGN = mmap.PAGESIZE
#: Segments a pool keeps, by content id: as many as a worker keeps contexts.
SEGMENTS_KEPT = 2
_NAME_PREFIX = "hpsearch-"


class SharedMemoryUnavailable(Exception):
    """This worker cannot map the master's segment (another machine, another user or
    container, a segment already closed): it receives the bytes instead."""


def host_id() -> str | None:
    """What a worker and its master must share to map each other's memory files.

    The boot id (one per machine and boot) and the process namespace (``/proc/<pid>``
    names the same processes on both sides); None where either is unknown (not Linux).

    Examples
    --------
    >>> host_id() == host_id()
    True
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create"):
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def shared_frames(frames: Sequence[Any], threshold: int = SHARED_THRESHOLD) -> list[list[int]]:
    """The frame indexes of each out-of-band buffer of at least ``threshold`` bytes.

    A buffer split over several frames (above ``MAX_FRAME_BYTES``) is shared whole, so
    its frames stay adjacent in the segment and ``loads`` joins them without a copy.

    Examples
    --------
    >>> import numpy as np
    >>> from hpsearch.serialization import dumps
    >>> frames = dumps({"big": np.zeros(200_000), "small": np.zeros(10_000)})
    >>> [memoryview(f).nbytes for f in frames[2:]]
    [1600000, 80000]
    >>> shared_frames(frames)
    [[2]]
    """
    header = msgpack.unpackb(memoryview(frames[0]), raw=False)
    out, index = [], 2
    for description in header["buffers"]:
        count = description["frames"]
        if description["nbytes"] >= threshold:
            out.append(list(range(index, index + count)))
        index += count
    return out


class Segment:
    """The master's copy of a context's large buffers: one sealed memory file.

    Made by :meth:`create`; :meth:`describe` is what a SEARCH message tells a local
    worker; :meth:`close` lets the memory go (once workers have unmapped it too).

    Attributes
    ----------
    frames : dict of int -> (offset, nbytes)
        Where each shared frame lies in the file.
    nbytes : int
        The file's size.
    """

    def __init__(self, fd: int, name: str, frames: dict[int, tuple[int, int]], nbytes: int) -> None:
        self.fd: int | None = fd
        self.name = name
        self.frames = frames
        self.nbytes = nbytes
        self.pid = os.getpid()

    @classmethod
    def create(cls, frames: Sequence[Any], threshold: int = SHARED_THRESHOLD) -> Segment | None:
        """Copy the large buffers of ``frames`` into a new sealed segment.

        None when there is nothing to share (no buffer of ``threshold`` bytes) or this
        system has no memory files; the caller then sends everything.

        Examples
        --------
        >>> import numpy as np
        >>> from hpsearch.serialization import dumps
        >>> segment = Segment.create(dumps(np.arange(1_000_000.0)))
        >>> sorted(segment.frames), segment.nbytes
        ([2], 8000000)
        >>> segment.close()
        """
        groups = shared_frames(frames, threshold)
        if not groups or host_id() is None:
            return None
        layout: dict[int, tuple[int, int]] = {}
        offset = 0
        for group in groups:
            offset = -(-offset // _ALIGN) * _ALIGN
            for index in group:
                size = memoryview(frames[index]).nbytes
                layout[index] = (offset, size)
                offset += size
        name = _NAME_PREFIX + secrets.token_hex(8)
        import fcntl

        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, offset)
            for index, (start, _) in layout.items():
                _write_all(fd, memoryview(frames[index]).cast("B"), start)
            # Sealed: its bytes can no longer change, whoever opens it.
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        logger.info("context buffers of %d bytes put in shared memory %s", offset, name)
        return cls(fd, name, layout, offset)

    def describe(self) -> dict[str, Any]:
        """The SEARCH message's ``shared`` field: where a local worker finds the frames."""
        return {"pid": self.pid, "fd": self.fd, "name": self.name, "nbytes": self.nbytes,
                "frames": [[index, offset, size] for index, (offset, size) in sorted(self.frames.items())]}

    def close(self) -> None:
        """Close the master's handle (idempotent); workers' mappings stay valid."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {self.nbytes} bytes, {len(self.frames)} frames)"


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    """``pwrite`` all of ``data`` (by pieces: one call writes at most about 2 GiB)."""
    step = 1 << 30
    position = 0
    while position < data.nbytes:
        written = os.pwrite(fd, data[position:position + step], offset + position)
        position += written


class SegmentCache:
    """The segments one pool keeps, by content id (oldest closed beyond ``size``).

    A later search on the same data reuses the segment (its workers, holding the
    context already, need nothing; a replacement worker maps it again).
    """

    def __init__(self, size: int = SEGMENTS_KEPT) -> None:
        self.size = max(1, size)
        self._segments: collections.OrderedDict[str, Segment] = collections.OrderedDict()

    def get(self, context_id: str, frames: Sequence[Any]) -> Segment | None:
        """The segment of ``context_id``, made from ``frames`` if not kept yet (or None)."""
        segment = self._segments.get(context_id)
        if segment is not None:
            self._segments.move_to_end(context_id)
            return segment
        try:
            segment = Segment.create(frames)
        except OSError as exc:  # no memory files left (EMFILE, ENOMEM): the data travels
            logger.warning("could not put the context in shared memory (%s); sending it to every worker", exc)
            return None
        if segment is not None:
            self._segments[context_id] = segment
            while len(self._segments) > self.size:
                self._segments.popitem(last=False)[1].close()
        return segment

    def close(self) -> None:
        """Close every segment kept."""
        while self._segments:
            self._segments.popitem(last=False)[1].close()

    def __len__(self) -> int:
        return len(self._segments)


def attach(description: Any) -> dict[int, memoryview]:
    """Map the segment a SEARCH message describes: read-only views by frame index.

    Raises :class:`SharedMemoryUnavailable` (with the reason) when this process cannot
    map it, or the description does not name a sealed hpsearch segment of its size.
    """
    try:
        pid, fd, name = int(description["pid"]), int(description["fd"]), str(description["name"])
        nbytes = int(description["nbytes"])
        frames = {int(i): (int(o), int(n)) for i, o, n in description["frames"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise SharedMemoryUnavailable(f"malformed description of shared memory: {exc!r}") from None
    if not name.startswith(_NAME_PREFIX) or nbytes <= 0 or not frames:
        raise SharedMemoryUnavailable(f"not an hpsearch segment: {name!r}")
    if any(o < 0 or n < 0 or o + n > nbytes or i < 2 for i, (o, n) in frames.items()):
        raise SharedMemoryUnavailable("shared frames outside the segment")
    if host_id() is None:
        raise SharedMemoryUnavailable("no shared memory files on this system")
    path = f"/proc/{pid}/fd/{fd}"
    try:
        if os.readlink(path) != f"/memfd:{name} (deleted)":
            raise SharedMemoryUnavailable(f"{path} is not the segment {name}")
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SharedMemoryUnavailable(f"cannot open {path}: {exc}") from None
    try:
        import fcntl

        seals = fcntl.fcntl(handle, fcntl.F_GET_SEALS)
        wanted = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
        if seals & wanted != wanted:
            raise SharedMemoryUnavailable(f"segment {name} is not sealed")
        size = os.fstat(handle).st_size
        if size != nbytes:
            raise SharedMemoryUnavailable(f"segment {name} holds {size} bytes, {nbytes} announced")
        memory = mmap.mmap(handle, nbytes, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise SharedMemoryUnavailable(f"cannot map {path}: {exc}") from None
    finally:
        os.close(handle)  # the mapping stays
    whole = memoryview(memory)
    return {index: whole[offset:offset + size] for index, (offset, size) in frames.items()}
