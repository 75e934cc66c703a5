"""Shipping the evaluation context, both sides, without I/O.

The master serializes a search's context once (:class:`Offer`): its frames cut into
chunks of at most :data:`CHUNK_BYTES` (zero-copy views) and its content id, which it
may compute while the first chunks already travel (:func:`hash_frames`, on the
caller's thread). Each worker that needs the data asks with NEED and a credit;
:class:`Upload` is the master's cursor for one worker: it yields the next chunks as
long as there is credit, and holds back the last one until the id is known (the last
chunk carries it). On the worker, :class:`Assembly` hashes each chunk and copies it
into one preallocated block, and refuses the whole unless it hashes to the announced
id, before anything is unpickled. Nothing here touches a socket: the peer table and
the worker loop turn these into messages.

On the master's machine the large buffers need not travel: an offer may carry a
:class:`~hpsearch.workers.shared.Segment` holding them, a worker that can map it says
so in its NEED, and its upload then holds only the other frames' bytes; its
:class:`Assembly` takes the mapped frames in place of those bytes (and hashes them
with the rest, in frame order).
"""

from __future__ import annotations

import collections
import logging
import mmap
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..evaluation import EvaluationContext, clip_text
from .protocol import Message
from .shared import Segment, SharedMemoryUnavailable, attach

logger = logging.getLogger(__name__)

__all__ = ["CHUNK_BYTES", "CONTEXT_CREDIT", "MAX_CREDIT", "Assembly", "ContextStore", "Offer", "Upload",
           "chunk_frames", "hash_frames"]

#: Context chunks hold at most this many bytes: frames are cut into pieces (zero-copy
#: views) and small frames grouped. Below glibc's largest mmap threshold (32 MiB), so a
#: worker's receive buffers are recycled heap memory rather than fresh pages each time.
CHUNK_BYTES = 8 * 1024 * 1024
#: Chunks a worker lets the master have in flight to it (its memory bound).
CONTEXT_CREDIT = 4
#: The most credit the master accepts in one NEED or CREDIT message.
MAX_CREDIT = 64


def chunk_frames(frames: Sequence[Any], limit: int | None = None) -> list[list[memoryview]]:
    """The frames' bytes, in order, as chunks of at most ``limit`` bytes (no copy).

    A worker writes the pieces one after another into one block and cuts it back
    into frames with the ``sizes`` of the first chunk, so pieces may split frames
    (and empty frames need no piece at all).

    Examples
    --------
    >>> [[bytes(p) for p in chunk] for chunk in chunk_frames([b"abc", b"", b"defgh"], limit=4)]
    [[b'abc', b'd'], [b'efgh']]
    """
    limit = limit or CHUNK_BYTES
    chunks: list[list[memoryview]] = [[]]
    room = limit
    for frame in frames:
        view = memoryview(frame).cast("B")
        start = 0
        while start < view.nbytes:
            if room == 0:
                chunks.append([])
                room = limit
            piece = view[start:start + room]
            chunks[-1].append(piece)
            start += piece.nbytes
            room -= piece.nbytes
    return chunks


def hash_frames(frames: Sequence[Any]) -> str:
    """The content id of serialized frames (what :class:`Assembly` checks)."""
    from .. import serialization  # looked up at call time: tests gate the hasher

    hasher = serialization.ContentHasher([memoryview(f).nbytes for f in frames])
    for frame in frames:
        hasher.update(frame)
    return hasher.hexdigest()


@dataclass
class Offer:
    """One search's context, serialized and chunked; ``context_id`` is None until sealed.

    With a ``segment`` (the large buffers in shared memory), ``local_chunks`` are the
    chunks of the other frames only: what a worker that maps the segment receives.
    """

    search: int
    chunks: list[list[memoryview]]
    sizes: list[int]
    nbytes: int
    context_id: str | None = None
    segment: Segment | None = None
    local_chunks: list[list[memoryview]] = field(default_factory=list)

    @classmethod
    def from_frames(cls, search: int, frames: Sequence[Any], limit: int | None = None,
                    segment: Segment | None = None) -> Offer:
        sizes = [memoryview(f).nbytes for f in frames]
        offer = cls(search, chunk_frames(frames, limit), sizes, sum(sizes), segment=segment)
        if segment is not None:
            shared = segment.shared_sizes
            offer.local_chunks = chunk_frames([f for i, f in enumerate(frames) if i not in shared], limit)
        return offer

    def search_fields(self, shared: bool = False) -> dict[str, Any]:
        """The SEARCH message that offers this context (``shared``: with its segment)."""
        fields: dict[str, Any] = {"search": self.search, "context_id": self.context_id, "nbytes": self.nbytes}
        if shared and self.segment is not None:
            fields["shared"] = self.segment.describe()
        return fields

    def wire_bytes(self, shared: bool) -> int:
        """The bytes a transfer sends: all, or (``shared``) those not in the segment."""
        if shared and self.segment is not None:
            return self.nbytes - sum(self.segment.shared_sizes.values())
        return self.nbytes


@dataclass
class Upload:
    """The master's cursor in one worker's transfer: next chunk and credit left.

    ``shared``: the worker maps the offer's segment; only ``local_chunks`` travel.
    """

    next_index: int = 0
    credit: int = 0
    shared: bool = False

    def grant(self, credit: Any) -> None:
        """Add the credit a NEED or CREDIT message gave (clamped to ``0..MAX_CREDIT``)."""
        self.credit += max(0, min(int(credit), MAX_CREDIT))

    def chunks(self, offer: Offer) -> Iterator[tuple[dict[str, Any], list[memoryview]]]:
        """The CONTEXT messages (fields, payload) the credit allows now.

        The last chunk names the content id, so it waits until the offer is sealed.
        """
        chunks = offer.local_chunks if self.shared and offer.segment is not None else offer.chunks
        count = len(chunks)
        while self.credit > 0 and self.next_index < count:
            index = self.next_index
            if index == count - 1 and offer.context_id is None:
                return
            fields: dict[str, Any] = {"search": offer.search, "context_id": offer.context_id,
                                      "index": index, "count": count}
            if index == 0:
                fields["sizes"] = offer.sizes
            self.next_index += 1
            self.credit -= 1
            yield fields, chunks[index]


#: Linux's madvise(MADV_POPULATE_WRITE) (5.14+): fault pages in ahead of their use.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _fresh_block(nbytes: int, stop: threading.Event) -> np.ndarray:
    """Memory for a context arriving, in base pages, faulted in ahead of the data.

    Fresh memory costs a page fault and a page of zeroing per 4 KiB on first touch,
    which on virtual machines costs about as much as receiving the data (and, for
    the transparent huge pages numpy asks for on large arrays, 2 to 5 times more).
    So the block is an anonymous mapping in base pages, and a thread faults it in
    with ``MADV_POPULATE_WRITE`` ahead of the copy, in the kernel, without the GIL,
    while the network delivers (``benchmarks/bench_transfer.py``: 1 GiB to a fresh
    worker 4.3 s with numpy's block, 1.2 to 1.6 s with this one, raw send 0.9 to 1.1 s).
    Elsewhere, a plain numpy array. Setting ``stop`` ends the faulting in.
    """
    if nbytes == 0 or not sys.platform.startswith("linux"):
        return np.empty(nbytes, dtype=np.uint8)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.madvise(mmap.MADV_NOHUGEPAGE)
    block = np.frombuffer(memory, dtype=np.uint8)
    threading.Thread(target=_populate, args=(block, stop), name="hpsearch-populate", daemon=True).start()
    return block


def _populate(block: np.ndarray, stop: threading.Event, step: int = 8 << 20) -> None:
    """Fault ``block`` in, front to back, until ``stop`` is set (a dropped transfer must
    not cost its whole size in memory); stops quietly where the kernel cannot."""
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise  # ctypes releases the GIL
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    address = block.ctypes.data
    for offset in range(0, block.nbytes, step):
        if stop.is_set():
            return
        if madvise(address + offset, min(step, block.nbytes - offset), _MADV_POPULATE_WRITE) != 0:
            return  # EINVAL before Linux 5.14: the copy faults the pages in itself


@dataclass
class Assembly:
    """A context arriving chunk by chunk, hashed and copied into one preallocated block.

    Each chunk's frames are fed to the content hash and copied into place, then
    released, so the worker holds the data about once (plus the credit window), and
    ``loads`` rebuilds the arrays on adjacent slices of the block without another
    copy. Chunks are signed by length only: :meth:`frames` refuses the bytes unless
    they hash to the content id the master announced, before anything is unpickled.
    The hash of one chunk runs while the next one is in transit. :meth:`drop` (a
    transfer done, failed, cancelled or cut) lets its memory go.

    ``shared`` holds the frames mapped from the master's segment (by frame index):
    they do not travel, the block holds only the others, and each shared frame is
    hashed at its place in the frame order.
    """

    search: int
    context_id: str | None  # None until a chunk names it (the last one does)
    hasher: Any = None
    block: np.ndarray | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # ends the faulting in
    sizes: list[int] = field(default_factory=list)
    offset: int = 0
    next_index: int = 0
    shared: dict[int, memoryview] = field(default_factory=dict)
    frame: int = -1  # the frame the next byte received belongs to
    left: int = 0  # bytes of it still to receive

    def add(self, msg: Message) -> bool:
        """Store a chunk; True when it was the last one."""
        if msg["index"] != self.next_index:
            raise ProtocolError(f"context chunk {msg['index']} arrived, {self.next_index} expected")
        named = msg["context_id"]
        if named is not None:
            if self.context_id is not None and named != self.context_id:
                raise ProtocolError(f"a chunk names context {named[:12]}, not {self.context_id[:12]}")
            self.context_id = named
        if self.block is None:
            from ..serialization import ContentHasher

            sizes = msg.header.get("sizes")
            if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
                raise ProtocolError("the first context chunk must list every frame size")
            if any(i >= len(sizes) or sizes[i] != view.nbytes for i, view in self.shared.items()):
                raise ProtocolError("the shared frames do not match the frame sizes announced")
            self.sizes = sizes
            self.hasher = ContentHasher(sizes)  # checks the sizes describe a header and a stream
            self.block = _fresh_block(sum(s for i, s in enumerate(sizes) if i not in self.shared), self.stop)
        for frame in msg.payload:
            self._receive(memoryview(frame))
        self.next_index += 1
        return bool(self.next_index == msg["count"])

    def _receive(self, view: memoryview) -> None:
        """Hash and store bytes received, hashing the shared frames at their turn."""
        assert self.block is not None
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B")
        position = 0
        while True:
            self._catch_up()
            if position == view.nbytes:
                return
            if self.frame >= len(self.sizes):
                raise ProtocolError("context chunks hold more bytes than announced")
            take = min(self.left, view.nbytes - position)
            piece = view[position:position + take]
            self.hasher.update(piece)
            self.block[self.offset:self.offset + take] = np.frombuffer(piece, dtype=np.uint8)
            self.offset += take
            position += take
            self.left -= take

    def _catch_up(self) -> None:
        """Past the frames complete: hash each shared frame whose turn comes, up to the
        next frame that travels and still lacks bytes (or the end)."""
        while self.left == 0 and self.frame < len(self.sizes):
            self.frame += 1
            if self.frame < len(self.sizes):
                if self.frame in self.shared:
                    self.hasher.update(self.shared[self.frame])
                else:
                    self.left = self.sizes[self.frame]

    def frames(self) -> list[memoryview]:
        """The frames received, once every byte is in and checked against the id."""
        if self.block is None:
            raise ProtocolError(f"context holds {self.offset} bytes, {sum(self.sizes)} announced")
        self._catch_up()  # shared frames after the last one received
        if self.offset != self.block.nbytes or self.frame != len(self.sizes):
            raise ProtocolError(f"context holds {self.offset} bytes, {self.block.nbytes} expected")
        if self.context_id is None:
            raise ProtocolError("the last context chunk did not name the context's id")
        if self.hasher.hexdigest() != self.context_id:
            raise ProtocolError(
                f"the context received does not hash to its content id {self.context_id[:12]}: "
                "corrupted or altered in transit; nothing of it was unpickled"
            )
        whole = self.block.data
        out, start = [], 0
        for index, size in enumerate(self.sizes):
            if index in self.shared:
                out.append(self.shared[index])
            else:
                out.append(whole[start:start + size])
                start += size
        return out

    def drop(self) -> None:
        self.stop.set()


Reply = tuple[str, dict[str, Any]]


class ContextStore:
    """The worker's side: the contexts it holds (least recently used dropped first,
    beyond ``size``) and the one arriving. Its methods take the master's messages and
    return the reply to send (no I/O).

    Examples
    --------
    >>> store = ContextStore(size=2)
    >>> store.on_search({"search": 1, "context_id": "ab" * 32, "nbytes": 10})
    ('NEED', {'search': 1, 'context_id': 'abababababababababababababababababababababababababababababababab', 'credit': 4})
    """

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self.contexts: collections.OrderedDict[str, EvaluationContext] = collections.OrderedDict()
        self.assembly: Assembly | None = None

    def on_search(self, msg: Any) -> Reply:
        """READY if the context is held, else NEED (with this worker's credit)."""
        search, cid = msg["search"], msg["context_id"]
        if cid is not None and cid in self.contexts:
            self.contexts.move_to_end(cid)
            logger.info("search %d: context %s already held", search, cid[:12])
            return "READY", {"search": search, "context_id": cid, "error": None}
        self.drop()
        shared: dict[int, memoryview] = {}
        description = getattr(msg, "header", msg).get("shared")
        if description is not None:
            try:
                shared = attach(description)
            except SharedMemoryUnavailable as exc:
                logger.info("search %d: receiving the whole context (%s)", search, exc)
        logger.info("search %d: receiving context %s (%d bytes, %d of them mapped from shared memory)", search,
                    (cid or "(id follows)")[:12], msg["nbytes"], sum(v.nbytes for v in shared.values()))
        self.assembly = Assembly(search, cid, shared=shared)
        fields: dict[str, Any] = {"search": search, "context_id": cid, "credit": CONTEXT_CREDIT}
        if shared:
            fields["shared"] = True  # send only the frames that are not in the segment
        return "NEED", fields

    def on_context(self, msg: Message) -> Reply | None:
        """CREDIT for the next chunk, READY (with the error, if any) after the last."""
        assembly = self.assembly
        if assembly is None or msg["search"] != assembly.search:
            logger.warning("dropped a context chunk nobody asked for")
            return None
        try:
            if not assembly.add(msg):
                return "CREDIT", {"search": assembly.search, "context_id": assembly.context_id, "credit": 1}
            from ..serialization import loads

            context = loads(assembly.frames())
            if not isinstance(context, EvaluationContext):
                raise ProtocolError(f"the context is a {type(context).__name__}, not an EvaluationContext")
        except Exception:
            self.drop()
            error = clip_text(traceback.format_exc())
            logger.error("could not load the context:\n%s", error)
            return "READY", {"search": assembly.search, "context_id": assembly.context_id or "", "error": error}
        self.drop()
        assert assembly.context_id is not None  # frames() checked it
        self.contexts[assembly.context_id] = context
        while len(self.contexts) > self.size:
            self.contexts.popitem(last=False)
        return "READY", {"search": assembly.search, "context_id": assembly.context_id, "error": None}

    def cancel(self, search: int) -> None:
        if self.assembly is not None and self.assembly.search == search:
            self.drop()

    def drop(self) -> None:
        """Forget the transfer under way (done, failed, cancelled or cut): its memory goes."""
        if self.assembly is not None:
            self.assembly.drop()
            self.assembly = None
