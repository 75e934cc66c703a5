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

A buffer that already lies in a shared mapping of a regular file (a ``numpy.memmap``,
``np.load(..., mmap_mode="r")``, joblib's memmapped arrays) is not copied at all: the
segment names the file (path, device, inode, size, modification time) and where the
buffer lies in it, and each worker maps that file read-only itself, as the master
does; the file's pages in the page cache are then the one copy for everyone. The
contract is numpy's for a memmap: the file must not change while a search uses it.
What can be checked is: a worker maps the file only if its device, inode, size and
modification time are still those the master saw (else it receives the bytes), and
hashes the mapped bytes with the rest, so a file changed between the master's hash
and the worker's mapping is refused, never used; a change after that is seen by the
workers as by the master's own memmap. A private (copy-on-write) or deleted mapping
is copied into the memory file like any other buffer.

Linux only (``memfd_create`` and ``/proc``); elsewhere :func:`host_id` is None and
every worker receives the data.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import secrets
import stat
import sys
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

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
    """The master's copy of a context's large buffers: one sealed memory file, plus the
    files that buffers already mapped from a file are mapped from.

    Made by :meth:`create`; :meth:`describe` is what a SEARCH message tells a local
    worker; :meth:`close` lets the memory go (once workers have unmapped it too).

    Attributes
    ----------
    frames : dict of int -> (offset, nbytes)
        Where each frame copied into the memory file lies in it.
    nbytes : int
        The memory file's size (0, and no file, when every buffer is file-backed).
    files : list of dict
        The files the other shared frames lie in: ``path``, ``dev``, ``ino``,
        ``size``, ``mtime_ns`` and ``frames`` (``[index, offset in the file, nbytes]``).
    """

    def __init__(self, fd: int | None, name: str, frames: dict[int, tuple[int, int]], nbytes: int,
                 files: list[dict[str, Any]] | None = None) -> None:
        self.fd: int | None = fd
        self.name = name
        self.frames = frames
        self.nbytes = nbytes
        self.files = files or []
        self.pid = os.getpid()

    @property
    def shared_sizes(self) -> dict[int, int]:
        """The size of every frame a local worker maps instead of receiving, by index."""
        sizes = {index: size for index, (_, size) in self.frames.items()}
        for file in self.files:
            sizes.update({index: size for index, _, size in file["frames"]})
        return sizes

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
        files, groups = _file_backed(frames, groups)
        if not groups:
            logger.info("context buffers mapped from %s shared as they are", ", ".join(f["path"] for f in files))
            return cls(None, "", {}, 0, files)
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
        return cls(fd, name, layout, offset, files)

    def describe(self) -> dict[str, Any]:
        """The SEARCH message's ``shared`` field: where a local worker finds the frames."""
        out: dict[str, Any] = {"pid": self.pid, "fd": self.fd, "name": self.name, "nbytes": self.nbytes,
                               "frames": [[index, offset, size] for index, (offset, size) in sorted(self.frames.items())]}
        if self.files:
            out["files"] = self.files
        return out

    def close(self) -> None:
        """Close the master's handle (idempotent); workers' mappings stay valid."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __repr__(self) -> str:
        return (f"Segment({self.name!r}, {self.nbytes} bytes, {len(self.frames)} frames, "
                f"{len(self.files)} files)")


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)


def _shared_file_mappings() -> list[tuple[int, int, int, int, str]]:
    """This process's shared mappings of files: (start, end, file offset, inode, path).

    Only shared ones (``s``): a private mapping may hold pages written since, which
    the file does not. Deleted files and pseudo-files (no absolute path) are left out.
    """
    out = []
    with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as maps:
        for line in maps:
            fields = line.rstrip("\n").split(None, 5)
            if len(fields) < 6 or fields[1][0] != "r" or fields[1][3] != "s":
                continue
            path = fields[5]
            if not path.startswith("/") or path.endswith(" (deleted)") or path.startswith("/memfd:"):
                continue
            start, end = (int(part, 16) for part in fields[0].split("-"))
            out.append((start, end, int(fields[2], 16), int(fields[4]), path))
    return out


def _file_backed(frames: Sequence[Any], groups: list[list[int]]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Split ``groups`` (each one buffer's frames) into those that lie whole in a shared
    mapping of a regular file (described by file) and the others (to be copied)."""
    try:
        mappings = _shared_file_mappings()
    except OSError:
        return [], groups
    if not mappings:
        return [], groups
    files: dict[tuple[int, int], dict[str, Any]] = {}
    others = []
    for group in groups:
        views = [memoryview(frames[index]).cast("B") for index in group]
        start = _address(views[0])
        nbytes = sum(view.nbytes for view in views)
        found = next(((m_start, offset, inode, path) for m_start, m_end, offset, inode, path in mappings
                      if m_start <= start and start + nbytes <= m_end), None)
        info = None
        if found is not None:
            try:
                info = os.stat(found[3])
            except OSError:
                pass
        if found is None or info is None:
            others.append(group)
            continue
        position = found[1] + start - found[0]  # where the buffer starts in the file
        if not stat.S_ISREG(info.st_mode) or info.st_ino != found[2] or position + nbytes > info.st_size:
            others.append(group)
            continue
        file = files.setdefault((info.st_dev, info.st_ino), {
            "path": found[3], "dev": info.st_dev, "ino": info.st_ino, "size": info.st_size,
            "mtime_ns": info.st_mtime_ns, "frames": []})
        for index, view in zip(group, views):
            file["frames"].append([index, position, view.nbytes])
            position += view.nbytes
    return list(files.values()), others


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
    map it, the description does not name a sealed hpsearch segment of its size, or a
    file it names is not the one the master mapped (device, inode, size and
    modification time).
    """
    try:
        pid = int(description["pid"])
        frames = {int(i): (int(o), int(n)) for i, o, n in description["frames"]}
        files = _file_refs(description.get("files", []))
        if frames:
            fd, name, nbytes = int(description["fd"]), str(description["name"]), int(description["nbytes"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SharedMemoryUnavailable(f"malformed description of shared memory: {exc!r}") from None
    indexes = [*frames, *(index for file in files for index, _, _ in file["frames"])]
    if not indexes or len(set(indexes)) != len(indexes) or min(indexes) < 2:
        raise SharedMemoryUnavailable("no shared frames, or frames named twice")
    if host_id() is None:
        raise SharedMemoryUnavailable("no shared memory files on this system")
    views: dict[int, memoryview] = {}
    if frames:
        views.update(_attach_memfd(pid, fd, name, nbytes, frames))
    for file in files:
        views.update(_attach_file(file))
    return views


def _file_refs(described: Any) -> list[dict[str, Any]]:
    """The ``files`` of a description, each field of the type it must have."""
    out = []
    for file in described:
        out.append({"path": str(file["path"]), "dev": int(file["dev"]), "ino": int(file["ino"]),
                    "size": int(file["size"]), "mtime_ns": int(file["mtime_ns"]),
                    "frames": [(int(i), int(o), int(n)) for i, o, n in file["frames"]]})
    return out


def _attach_memfd(pid: int, fd: int, name: str, nbytes: int,
                  frames: dict[int, tuple[int, int]]) -> dict[int, memoryview]:
    if not name.startswith(_NAME_PREFIX) or nbytes <= 0:
        raise SharedMemoryUnavailable(f"not an hpsearch segment: {name!r}")
    if any(o < 0 or n < 0 or o + n > nbytes for o, n in frames.values()):
        raise SharedMemoryUnavailable("shared frames outside the segment")
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


def _attach_file(file: dict[str, Any]) -> dict[int, memoryview]:
    """Map the part of a file that holds its frames, if it is still the master's file."""
    path, frames = file["path"], file["frames"]
    if any(o < 0 or n <= 0 or o + n > file["size"] for _, o, n in frames):
        raise SharedMemoryUnavailable(f"shared frames outside the file {path}")
    try:
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SharedMemoryUnavailable(f"cannot open {path}: {exc}") from None
    try:
        info = os.fstat(handle)
        seen = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if not stat.S_ISREG(info.st_mode) or seen != (file["dev"], file["ino"], file["size"], file["mtime_ns"]):
            raise SharedMemoryUnavailable(
                f"{path} changed since the master mapped it (device, inode, size, modification time "
                f"{seen}, not {(file['dev'], file['ino'], file['size'], file['mtime_ns'])})")
        first = min(o for _, o, _ in frames)
        start = first - first % mmap.ALLOCATIONGRANULARITY
        end = max(o + n for _, o, n in frames)
        memory = mmap.mmap(handle, end - start, access=mmap.ACCESS_READ, offset=start)
    except OSError as exc:
        raise SharedMemoryUnavailable(f"cannot map {path}: {exc}") from None
    finally:
        os.close(handle)  # the mapping stays
    whole = memoryview(memory)
    return {index: whole[offset - start:offset - start + size] for index, offset, size in frames}
