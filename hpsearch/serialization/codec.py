"""The hybrid codec: pickle protocol 5, cloudpickle fallback, out-of-band buffers.

Frame layout of one serialized object (``dumps`` returns this list)::

    frames[0]   header: msgpack map, small, describes every other frame
    frames[1]   the pickle stream (protocol 5)
    frames[2:]  the out-of-band buffers, in the order pickle asked for them;
                a buffer above MAX_FRAME_BYTES spans several frames

The header is ``{"v": FORMAT_VERSION, "pickler": "pickle" | "cloudpickle",
"pickle_nbytes": int, "buffers": [{"nbytes": int, "frames": int,
"writeable": bool}, ...]}``. It holds nothing that depends on the run (no time,
no address, no process id), so equal objects give equal frames.

Why each rule (see the protocol notes §7.2 and dask's
``distributed/protocol/pickle.py``, the model for this module):

- plain :mod:`pickle` first, :mod:`cloudpickle` only when plain pickle fails or
  refers to ``__main__`` (which the worker process does not have); the buffers
  collected by the failed attempt are cleared before the retry, so none of
  them leaks into the message;
- buffers of at least ``OUT_OF_BAND_THRESHOLD`` bytes are not copied: their
  frames are memoryviews on the sender's memory (the frames keep it alive, and
  the caller must not modify it until the frames are sent);
- smaller buffers stay inside the pickle stream, where a copy costs less than
  one more frame;
- on the receiving side every out-of-band buffer is read-only unless the
  caller asks for writeable data *and* the sender's buffer was writeable
  (see :func:`loads`): a context is shared by every task of a worker, and an
  estimator that writes into its input must not change the next fold's data.
"""

from __future__ import annotations

import collections
import copyreg
import io
import logging
import pickle
from collections.abc import Iterator, Sequence
from typing import Any, Union

import blake3
import cloudpickle
import msgpack
import numpy as np

from ..errors import SerializationError

__all__ = [
    "FORMAT_VERSION",
    "MAX_FRAME_BYTES",
    "OUT_OF_BAND_THRESHOLD",
    "ContentHasher",
    "Frame",
    "content_id",
    "dumps",
    "loads",
]

logger = logging.getLogger(__name__)

#: Version of the frame layout; a reader refuses any other version.
FORMAT_VERSION = 1

#: Buffers of at least this many bytes travel out-of-band, uncopied, in their
#: own frames (the same crossover as ``zmq.COPY_THRESHOLD``).
OUT_OF_BAND_THRESHOLD = 64 * 1024

#: Largest frame ``dumps`` produces; bigger buffers are split (libzmq fails on
#: single frames above 2 GiB, and 64 MiB is dask's shard size).
MAX_FRAME_BYTES = 64 * 1024 * 1024

#: A header above this size is refused before it is decoded.
MAX_HEADER_BYTES = 16 * 1024 * 1024

#: What ``dumps`` returns in the list and what ``loads`` accepts (any object
#: with the buffer protocol works too, such as ``zmq.Frame`` or ``bytearray``).
Frame = Union[bytes, memoryview]

_PICKLERS = ("pickle", "cloudpickle")
_HEADER_KEYS = {"v", "pickler", "pickle_nbytes", "buffers"}
_BUFFER_KEYS = {"nbytes", "frames", "writeable"}


# --------------------------------------------------------------------------- dumps


def dumps(obj: Any, *, memmaps: bool = True) -> list[Frame]:
    """Serialize ``obj`` into frames, large buffers uncopied.

    Parameters
    ----------
    obj : object
        Anything :mod:`pickle` or :mod:`cloudpickle` can serialize: numpy
        arrays, scipy.sparse matrices, pandas objects, scikit-learn
        estimators, functions, lambdas, nested containers.
    memmaps : bool, default=True
        Pickle a ``numpy.memmap`` as the plain array it shows, its bytes out-of-band
        and uncopied like any array's (numpy pickles its subclasses in-band: a copy of
        the whole file in the pickle stream). False uses pickle's own ``dumps``, a few
        microseconds less per call, where a memmap is copied in-band: for the small
        per-task messages.

    Returns
    -------
    frames : list of bytes or memoryview
        ``frames[0]`` is the msgpack header, ``frames[1]`` the pickle stream,
        the rest the out-of-band buffers. Buffer frames are memoryviews that
        share memory with ``obj``'s arrays: keep ``obj`` unchanged until the
        frames are sent (the frames keep the memory alive, not unchanged).

    Raises
    ------
    SerializationError
        When neither pickle nor cloudpickle can serialize ``obj``; the
        original exception is chained as ``__cause__``.

    Examples
    --------
    >>> import numpy as np
    >>> from hpsearch.serialization import dumps, loads
    >>> X = np.arange(100_000, dtype=np.float64)
    >>> frames = dumps({"X": X, "f": lambda x: 2 * x})
    >>> len(frames)  # header, pickle stream, X's buffer
    3
    >>> np.shares_memory(np.frombuffer(frames[2], dtype=np.float64), X)
    True
    >>> out = loads(frames)
    >>> bool((out["X"] == X).all()), out["f"](21)
    (True, 42)
    """
    buffers: list[pickle.PickleBuffer] = []

    def keep_large_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        # pickle's rule: a true return value serializes the buffer in-band.
        if buffer.raw().nbytes < OUT_OF_BAND_THRESHOLD:
            return True
        buffers.append(buffer)
        return False

    stream, pickler = _pickle_with_fallback(obj, buffers, keep_large_out_of_band, memmaps)

    buffer_views = [buffer.raw() for buffer in buffers]
    payload: list[Frame] = []
    descriptions = []
    for view in buffer_views:
        pieces = _split(view)
        payload.extend(pieces)
        descriptions.append(
            {"nbytes": view.nbytes, "frames": len(pieces), "writeable": not view.readonly}
        )
    header = {
        "v": FORMAT_VERSION,
        "pickler": pickler,
        "pickle_nbytes": len(stream),
        "buffers": descriptions,
    }
    return [msgpack.packb(header, use_bin_type=True), stream, *payload]


def _pickle_with_fallback(
    obj: Any, buffers: list[pickle.PickleBuffer], callback: Any, memmaps: bool = True
) -> tuple[bytes, str]:
    """Pickle ``obj`` with plain pickle, else cloudpickle; say which one was used."""
    try:
        if memmaps:
            stream = _dump(pickle.Pickler, obj, callback)
        else:
            stream = pickle.dumps(obj, protocol=5, buffer_callback=callback)
    except Exception as exc:  # noqa: BLE001 - any failure means "try cloudpickle"
        logger.debug("plain pickle failed (%s: %s); trying cloudpickle", type(exc).__name__, exc)
    else:
        if not _needs_cloudpickle(stream):
            return stream, "pickle"
    # Buffers collected by the first attempt must not leak into this message.
    buffers.clear()
    try:
        stream = _dump(_CloudPickler, obj, callback)
    except Exception as exc:
        buffers.clear()
        raise SerializationError(
            f"cannot serialize an object of type {type(obj).__qualname__!r} with pickle "
            f"or cloudpickle: {type(exc).__name__}: {exc}. Hint: objects holding open "
            "files, sockets, locks or threads cannot be sent; pass what rebuilds them."
        ) from exc
    return stream, "cloudpickle"


def _reduce_memmap(array: np.memmap) -> Any:
    """A ``numpy.memmap`` pickles as the plain array it shows.

    numpy pickles a subclass of ``ndarray`` in-band (protocol 5 hands only plain arrays
    to ``buffer_callback``): a memory-mapped X would be copied whole into the pickle
    stream, then again by every receiver's unpickling. As a plain array its bytes travel
    out-of-band like any other, uncopied (and, on the master's machine, are mapped from
    the same file: :mod:`hpsearch.workers.shared`). The receiver gets an ``ndarray``,
    read-only as every context array is, not a ``memmap``.
    """
    return array.view(np.ndarray).__reduce_ex__(5)


def _dump(pickler_class: Any, obj: Any, callback: Any) -> bytes:
    """Pickle ``obj`` with ``pickle.Pickler`` or :class:`_CloudPickler`, memmaps as arrays."""
    with io.BytesIO() as file:
        pickler = pickler_class(file, protocol=5, buffer_callback=callback)
        if pickler_class is pickle.Pickler:
            pickler.dispatch_table = _PICKLE_TABLE
        pickler.dump(obj)
        return file.getvalue()


class _MemmapTable(dict[type, Any]):
    """pickle's dispatch table with memmaps as arrays: a dict looked up in C, falling
    back to copyreg's live table (which libraries extend; copying its hundreds of
    entries per call cost more than the pickling of a task's params)."""

    def __missing__(self, cls: type) -> Any:
        return copyreg.dispatch_table[cls]  # a KeyError tells pickle there is none


_PICKLE_TABLE = _MemmapTable({np.memmap: _reduce_memmap})


class _CloudPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, memmaps as arrays (its table is read when it is made)."""

    dispatch_table = collections.ChainMap({np.memmap: _reduce_memmap}, cloudpickle.Pickler.dispatch_table)


def _needs_cloudpickle(stream: bytes) -> bool:
    """True when a plain pickle stream refers to code the receiver may not have.

    A reference to ``__main__`` (a script or a notebook) cannot be resolved in
    the worker process; modules registered with
    ``cloudpickle.register_pickle_by_value`` must travel by value. A false
    positive (the bytes appear inside data) only costs a cloudpickle retry.
    """
    if b"__main__" in stream:
        return True
    return any(name.encode() in stream for name in cloudpickle.list_registry_pickle_by_value())


def _split(view: memoryview) -> list[memoryview]:
    """Slices of at most ``MAX_FRAME_BYTES`` of a 1-D byte view, without copying."""
    if view.nbytes <= MAX_FRAME_BYTES:
        return [view]
    return [view[start : start + MAX_FRAME_BYTES] for start in range(0, view.nbytes, MAX_FRAME_BYTES)]


# --------------------------------------------------------------------------- loads


def loads(frames: Sequence[Any], *, writeable: bool = False) -> Any:
    """Rebuild the object that :func:`dumps` turned into ``frames``.

    Parameters
    ----------
    frames : sequence of bytes-like
        The frames exactly as :func:`dumps` returned them, or as received:
        ``bytes``, ``bytearray``, ``memoryview``, ``zmq.Frame`` or anything
        with the buffer protocol.
    writeable : bool, default=False
        Whether arrays rebuilt on out-of-band buffers may be written to.

        - ``False`` (the default): every out-of-band buffer is exposed
          read-only, with no copy. Arrays rebuilt on them share memory with
          the frames and are read-only, so an estimator that modifies its
          input in place fails loudly instead of corrupting data shared by
          later tasks.
        - ``True``: a buffer whose sender's array was writeable is writeable.
          A writeable frame (``bytearray``, writeable ``zmq.Frame``) is used
          as is, without copy; a read-only frame (``bytes``) is copied once.
          Buffers that were read-only on the sender stay read-only.

        Small arrays (below ``OUT_OF_BAND_THRESHOLD`` bytes) travel inside the
        pickle stream; pickle rebuilds them as private copies, writeable when
        the sender's array was writeable, whatever this flag says.

    Returns
    -------
    obj : object
        The deserialized object.

    Raises
    ------
    SerializationError
        The frames are truncated, have extra frames, a header that is not
        valid msgpack or misdescribes the frames, an unknown format version,
        or a pickle stream that cannot be unpickled (the cause is chained).

    Notes
    -----
    No copy is made for a buffer held in one frame. A buffer split over
    several frames is joined: without copy when the frames are adjacent
    slices of one memory block (frames straight from :func:`dumps` in the
    same process), otherwise with exactly one copy into one preallocated
    block (``numpy.empty``, not zero-filled). The frames must stay
    unchanged while the returned object is in use, since it may share their
    memory.

    Examples
    --------
    >>> import numpy as np
    >>> from hpsearch.serialization import dumps, loads
    >>> X = np.ones((500, 100))
    >>> received = [bytearray(frame) for frame in dumps(X)]  # as off the wire
    >>> Y = loads(received)
    >>> Y.flags.writeable, np.shares_memory(Y, np.frombuffer(received[2], np.uint8))
    (False, True)
    >>> loads(received, writeable=True).flags.writeable
    True
    """
    views = _frame_views(frames)
    header = _decode_header(views[0], len(views))
    stream = views[1]
    if stream.nbytes != header["pickle_nbytes"]:
        raise SerializationError(
            f"pickle frame holds {stream.nbytes} bytes but the header announces "
            f"{header['pickle_nbytes']}: the frames are truncated or corrupted."
        )
    buffers = _rebuild_buffers(header["buffers"], views[2:], writeable)
    remaining: Iterator[memoryview] = iter(buffers)
    try:
        obj = pickle.loads(stream, buffers=remaining)
    except Exception as exc:
        raise SerializationError(
            f"cannot unpickle the payload ({header['pickler']} stream of {stream.nbytes} "
            f"bytes, {len(buffers)} out-of-band buffers): {type(exc).__name__}: {exc}. "
            "Hint: a missing module means the worker lacks a package the master has."
        ) from exc
    if next(remaining, None) is not None:
        raise SerializationError(
            f"the header announces {len(buffers)} out-of-band buffers but the pickle "
            "stream used fewer: the frames do not belong together."
        )
    return obj


def _frame_views(frames: Sequence[Any]) -> list[memoryview]:
    """Flat read-or-write byte views of the frames; refuse what is not a frame list."""
    if isinstance(frames, (bytes, bytearray, memoryview, str)) or not isinstance(
        frames, Sequence
    ):
        raise SerializationError(
            f"frames must be a list of bytes-like frames, got {type(frames).__name__}. "
            "Hint: pass the whole list that dumps returned."
        )
    if len(frames) < 2:
        raise SerializationError(
            f"got {len(frames)} frame(s); a serialized object has at least 2 "
            "(header and pickle stream): the frame list is truncated."
        )
    views = []
    for index, frame in enumerate(frames):
        try:
            view = memoryview(frame)
        except TypeError as exc:
            raise SerializationError(
                f"frame {index} is a {type(frame).__name__}, not a bytes-like object."
            ) from exc
        if view.ndim != 1 or view.itemsize != 1 or view.format not in ("B", "b", "c"):
            if not view.c_contiguous:
                raise SerializationError(f"frame {index} is not a contiguous block of bytes.")
            view = view.cast("B")
        views.append(view)
    return views


def _decode_header(view: memoryview, nframes: int) -> dict[str, Any]:
    """Decode and validate the header against the number of frames received."""
    if view.nbytes > MAX_HEADER_BYTES:
        raise SerializationError(
            f"header frame of {view.nbytes} bytes exceeds the {MAX_HEADER_BYTES}-byte limit: "
            "frame 0 is not an hpsearch header."
        )
    try:
        header = msgpack.unpackb(view, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise SerializationError(
            f"frame 0 is not a valid msgpack header ({type(exc).__name__}: {exc}): "
            "corrupted or not produced by hpsearch.serialization.dumps."
        ) from exc
    if not isinstance(header, dict):
        raise SerializationError(
            f"the header must be a msgpack map, got {type(header).__name__}."
        )
    version = header.get("v")
    if version != FORMAT_VERSION:
        raise SerializationError(
            f"unknown serialization format version {version!r}; this hpsearch reads "
            f"version {FORMAT_VERSION}. Hint: install the same hpsearch version on the "
            "master and the workers."
        )
    if set(header) != _HEADER_KEYS:
        raise SerializationError(
            f"header keys {sorted(header)} differ from the expected {sorted(_HEADER_KEYS)}."
        )
    if header["pickler"] not in _PICKLERS:
        raise SerializationError(
            f"header field 'pickler' is {header['pickler']!r}; expected one of {_PICKLERS}."
        )
    _check_count("pickle_nbytes", header["pickle_nbytes"], minimum=0)
    descriptions = header["buffers"]
    if not isinstance(descriptions, list):
        raise SerializationError(
            f"header field 'buffers' must be a list, got {type(descriptions).__name__}."
        )
    expected_frames = 2
    for index, description in enumerate(descriptions):
        if not isinstance(description, dict) or set(description) != _BUFFER_KEYS:
            raise SerializationError(
                f"header buffer {index} must be a map with keys {sorted(_BUFFER_KEYS)}, "
                f"got {description!r}."
            )
        _check_count(f"buffers[{index}].nbytes", description["nbytes"], minimum=0)
        _check_count(f"buffers[{index}].frames", description["frames"], minimum=1)
        if not isinstance(description["writeable"], bool):
            raise SerializationError(
                f"header field buffers[{index}].writeable must be a bool, "
                f"got {description['writeable']!r}."
            )
        expected_frames += description["frames"]
    if expected_frames != nframes:
        raise SerializationError(
            f"the header describes {expected_frames} frames but {nframes} were received: "
            "the frame list is truncated or has extra frames."
        )
    return header


def _check_count(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SerializationError(
            f"header field {name} must be an integer >= {minimum}, got {value!r}."
        )


def _rebuild_buffers(
    descriptions: list[dict[str, Any]], payload: list[memoryview], writeable: bool
) -> list[memoryview]:
    """One byte view per out-of-band buffer, writeable only when allowed."""
    buffers = []
    position = 0
    for index, description in enumerate(descriptions):
        pieces = payload[position : position + description["frames"]]
        position += description["frames"]
        received = sum(piece.nbytes for piece in pieces)
        if received != description["nbytes"]:
            raise SerializationError(
                f"out-of-band buffer {index} spans {received} bytes in its "
                f"{len(pieces)} frame(s) but the header announces {description['nbytes']}: "
                "the frames are truncated or corrupted."
            )
        buffer = _join(pieces, description["nbytes"])
        if writeable and description["writeable"]:
            if buffer.readonly:
                # A read-only frame (bytes) cannot back a writeable array: copy once.
                buffer = memoryview(bytearray(buffer))
        elif not buffer.readonly:
            buffer = buffer.toreadonly()
        buffers.append(buffer)
    return buffers


def _join(pieces: list[memoryview], nbytes: int) -> memoryview:
    """One view over the pieces: as is, adjacent slices merged, or one copy."""
    if len(pieces) == 1:
        return pieces[0]
    merged = _merge_adjacent(pieces, nbytes)
    if merged is not None:
        return merged
    # Separate allocations (frames off the wire): one copy into one block.
    joined = np.empty(nbytes, dtype=np.uint8)
    offset = 0
    for piece in pieces:
        joined[offset : offset + piece.nbytes] = np.frombuffer(piece, dtype=np.uint8)
        offset += piece.nbytes
    return joined.data.cast("B")


def _merge_adjacent(pieces: list[memoryview], nbytes: int) -> memoryview | None:
    """A view over pieces that are consecutive slices of one exporter, else None."""
    owner = pieces[0].obj
    if owner is None or any(piece.obj is not owner for piece in pieces):
        return None
    start = _address(pieces[0])
    address = start
    for piece in pieces:
        if _address(piece) != address:
            return None
        address += piece.nbytes
    try:
        base = pickle.PickleBuffer(owner).raw()  # also flattens Fortran-ordered arrays
    except (BufferError, TypeError):
        return None
    offset = start - _address(base)
    if offset < 0 or offset + nbytes > base.nbytes:
        return None
    merged = base[offset : offset + nbytes]
    if any(piece.readonly for piece in pieces) and not merged.readonly:
        merged = merged.toreadonly()
    return merged


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0])


# --------------------------------------------------------------------- content_id

_CONTENT_CONTEXT = "hpsearch serialization content_id v1"


def content_id(frames: Sequence[Any]) -> str:
    """A stable content address of serialized frames (hex BLAKE3, 256 bits).

    The digest covers the format version, the pickle stream and every
    out-of-band buffer (each preceded by its length, so moving bytes from one
    buffer to the next changes the id), and nothing else from the header:
    not the pickler name nor how buffers were split into frames. Equal
    frames give equal ids in any process and on any machine; different
    content gives different ids.

    Compute it once per evaluation context (it reads every byte, hashing on
    every core: about 5 GB/s on two), never per task. A receiver computes the same
    id while frames arrive with :class:`ContentHasher`.

    Parameters
    ----------
    frames : sequence of bytes-like
        Frames as returned by :func:`dumps` (or as received).

    Returns
    -------
    digest : str
        64 lowercase hexadecimal characters.

    Raises
    ------
    SerializationError
        When the frames are not a valid serialized object (same checks as
        :func:`loads`, without unpickling anything).

    Notes
    -----
    The id addresses the serialized bytes, not Python equality: ``dumps``
    is deterministic for the same object graph, but two objects that compare
    equal may pickle differently: dicts with another insertion order, an
    array referenced twice versus two equal arrays, a read-only versus a
    writeable large array (pickle records the flag in the stream), and sets
    of strings, whose order depends on ``PYTHONHASHSEED``.

    Examples
    --------
    >>> import numpy as np
    >>> from hpsearch.serialization import content_id, dumps
    >>> X = np.arange(1_000_000.0)
    >>> content_id(dumps(X)) == content_id(dumps(X.copy()))
    True
    >>> content_id(dumps(X)) == content_id(dumps(X + 1))
    False
    """
    views = _frame_views(frames)
    hasher = ContentHasher([view.nbytes for view in views], max_threads=-1)
    for view in views:
        hasher.update(view)
    return hasher.hexdigest()


class ContentHasher:
    """:func:`content_id`, computed as the bytes of the frames arrive.

    A receiver feeds the frames' bytes once, in order, cut anywhere (a frame may
    arrive in several pieces, several frames in one piece), while the next piece
    is still in transit, and compares :meth:`hexdigest` with the id the sender
    announced: the same BLAKE3 digest as ``content_id(frames)``.

    Parameters
    ----------
    sizes : sequence of int
        The size of every frame, header first (the header is checked against the
        number of frames when its last byte arrives).
    max_threads : int
        Threads hashing one piece: 1 (the default) leaves the other cores to the
        network; -1 uses every core (:func:`content_id` does, on frames already in
        memory).

    Examples
    --------
    >>> import numpy as np
    >>> from hpsearch.serialization import content_id, dumps
    >>> frames = dumps(np.arange(100_000.0))
    >>> stream = b"".join(bytes(f) for f in frames)
    >>> hasher = ContentHasher([len(f) for f in frames])
    >>> for start in range(0, len(stream), 4096):
    ...     hasher.update(stream[start:start + 4096])
    >>> hasher.hexdigest() == content_id(frames)
    True
    """

    def __init__(self, sizes: Sequence[int], *, max_threads: int = 1) -> None:
        self._sizes = [int(size) for size in sizes]
        if len(self._sizes) < 2 or min(self._sizes) < 0:
            raise SerializationError(
                f"frame sizes {self._sizes[:8]}... describe no serialized object: at least a "
                "header and a pickle stream, none negative."
            )
        if self._sizes[0] > MAX_HEADER_BYTES:
            raise SerializationError(
                f"a header frame of {self._sizes[0]} bytes exceeds the {MAX_HEADER_BYTES}-byte limit."
            )
        threads = blake3.blake3.AUTO if max_threads == -1 else max_threads
        # Key derivation mode with a context string: ids of this scheme never equal
        # a plain BLAKE3 of the same bytes (or any other use of BLAKE3 in hpsearch).
        self._digest = blake3.blake3(derive_key_context=_CONTENT_CONTEXT, max_threads=threads)
        self._frame = 0  # the frame the next byte belongs to
        self._position = 0  # bytes of it seen so far
        self._started = False  # its prefix was hashed
        self._header = bytearray()
        self._prefixes: dict[int, bytes] = {}

    def update(self, data: Any) -> None:
        """Hash the next bytes (raises ``SerializationError`` for a bad header or excess)."""
        view = memoryview(data)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B")
        offset, sizes = 0, self._sizes
        while self._frame < len(sizes):
            frame = self._frame
            if not self._started:
                self._started = True
                if frame in self._prefixes:  # the start of the stream or of a buffer
                    self._digest.update(self._prefixes[frame])
            take = min(sizes[frame] - self._position, view.nbytes - offset)
            if take:
                piece = view[offset : offset + take]
                if frame == 0:
                    self._header += piece
                else:
                    self._digest.update(piece)
                offset += take
                self._position += take
            if self._position < sizes[frame]:
                return  # every byte given is used; the frame goes on in the next piece
            if frame == 0:
                self._read_header()
            self._frame, self._position, self._started = frame + 1, 0, False
        if offset < view.nbytes:
            raise SerializationError(
                f"{view.nbytes - offset} byte(s) beyond the {len(sizes)} frames announced."
            )

    def _read_header(self) -> None:
        header = _decode_header(memoryview(self._header), len(self._sizes))
        # The pickle stream is preceded by the format version and its actual length;
        # the first frame of every buffer by the buffer's length, so moving bytes
        # from one buffer to the next changes the id.
        self._prefixes[1] = FORMAT_VERSION.to_bytes(8, "little") + self._sizes[1].to_bytes(8, "little")
        position = 2
        for description in header["buffers"]:
            self._prefixes[position] = int(description["nbytes"]).to_bytes(8, "little")
            position += description["frames"]  # at least 1 (checked by _decode_header)

    def hexdigest(self) -> str:
        """The content id (64 hex characters) once every byte was fed."""
        self.update(b"")  # trailing empty frames
        if self._frame != len(self._sizes):
            raise SerializationError(
                f"{self._frame} of {len(self._sizes)} frames complete: the frames are truncated."
            )
        return self._digest.hexdigest()
