"""Bad frames raise SerializationError; content_id addresses content."""

from __future__ import annotations

from unittest import mock

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hpsearch
from hpsearch.serialization import (
    FORMAT_VERSION,
    ContentHasher,
    SerializationError,
    codec,
    content_id,
    dumps,
    loads,
)


def sample_object():
    return {
        "X": np.arange(40_000, dtype=np.float64).reshape(-1, 4),
        "y": np.arange(10_000) % 3,
        "name": "context",
        "small": np.ones(3),
    }


def with_header(frames, **changes):
    header = msgpack.unpackb(frames[0], raw=False)
    header.update(changes)
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


def test_serialization_error_is_the_documented_type():
    assert hpsearch.serialization.SerializationError is hpsearch.SerializationError
    assert issubclass(SerializationError, hpsearch.HPSearchError)
    assert issubclass(SerializationError, ValueError)


# ------------------------------------------------------------------ truncated frames


@pytest.mark.parametrize("keep", [0, 1, 2, 3])
def test_truncated_frame_list(keep):
    frames = dumps(sample_object())
    assert len(frames) == 4

    with pytest.raises(SerializationError, match="truncated"):
        loads(frames[:keep])


def test_extra_frame():
    frames = dumps(sample_object())

    with pytest.raises(SerializationError, match="4 frames but 5 were received"):
        loads([*frames, b"extra"])


def test_truncated_pickle_stream_and_buffer():
    frames = dumps(sample_object())

    with pytest.raises(SerializationError, match="pickle frame holds"):
        loads([frames[0], frames[1][:-1], *frames[2:]])
    with pytest.raises(SerializationError, match="out-of-band buffer 1 spans"):
        loads([*frames[:3], frames[3][:-8]])


def test_truncated_pickle_stream_with_a_matching_header_is_detected():
    frames = dumps(sample_object())
    stream = bytes(frames[1])
    for length in range(0, len(stream) - 1, 7):
        cut = with_header([frames[0], stream[:length], *frames[2:]], pickle_nbytes=length)
        with pytest.raises(SerializationError, match="cannot unpickle"):
            loads(cut)


# -------------------------------------------------------------------- corrupt header


def test_unknown_format_version():
    frames = with_header(dumps(sample_object()), v=FORMAT_VERSION + 1)

    with pytest.raises(SerializationError, match=r"unknown serialization format version 2.*reads version 1"):
        loads(frames)


@pytest.mark.parametrize(
    ("header_frame", "message"),
    [
        (b"", "not a valid msgpack header"),
        (b"\xc1garbage", "not a valid msgpack header"),
        (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
        (msgpack.packb({"v": 1}), "header keys"),
        (msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": 5, "buffers": [], "x": 1}), "header keys"),
        (msgpack.packb({"v": 1, "pickler": "marshal", "pickle_nbytes": 5, "buffers": []}), "'pickler'"),
        (msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": -5, "buffers": []}), "pickle_nbytes"),
        (msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": True, "buffers": []}), "pickle_nbytes"),
        (msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": 5, "buffers": {}}), "must be a list"),
        (msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": 5, "buffers": [7]}), "buffer 0 must be a map"),
        (
            msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": 5,
                           "buffers": [{"nbytes": "8", "frames": 1, "writeable": True}]}),
            r"buffers\[0\].nbytes",
        ),
        (
            msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": 5,
                           "buffers": [{"nbytes": 8, "frames": 0, "writeable": True}]}),
            r"buffers\[0\].frames",
        ),
        (
            msgpack.packb({"v": 1, "pickler": "pickle", "pickle_nbytes": 5,
                           "buffers": [{"nbytes": 8, "frames": 1, "writeable": 1}]}),
            r"buffers\[0\].writeable",
        ),
        (b"\x00" * (codec.MAX_HEADER_BYTES + 1), "exceeds"),
    ],
)  # fmt: skip
def test_corrupt_header(header_frame, message):
    with pytest.raises(SerializationError, match=message):
        loads([header_frame, b"x" * 5, b"y" * 8])
    with pytest.raises(SerializationError, match=message):
        content_id([header_frame, b"x" * 5, b"y" * 8])


def test_header_announcing_more_buffers_than_the_stream_uses():
    frames = dumps(sample_object())
    header = msgpack.unpackb(frames[0], raw=False)
    header["buffers"].append({"nbytes": 3, "frames": 1, "writeable": False})

    with pytest.raises(SerializationError, match="used fewer"):
        loads([msgpack.packb(header), *frames[1:], b"abc"])


def test_header_announcing_fewer_buffers_than_the_stream_needs():
    frames = dumps(sample_object())
    header = msgpack.unpackb(frames[0], raw=False)
    header["buffers"].pop()

    with pytest.raises(SerializationError, match="cannot unpickle"):
        loads([msgpack.packb(header), *frames[1:-1]])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_corruption_of_the_header_raises_or_changes_nothing(data):
    original = sample_object()
    frames = dumps(original)
    header = bytearray(frames[0])
    position = data.draw(st.integers(0, len(header) - 1), label="position")
    header[position] = data.draw(st.integers(0, 255), label="byte")

    try:
        restored = loads([bytes(header), *frames[1:]])
    except SerializationError:
        return
    # A flipped "writeable" flag is the only harmless change left.
    assert restored.keys() == original.keys()
    for key in ("X", "y", "small"):
        np.testing.assert_array_equal(restored[key], original[key])


def test_garbage_in_the_pickle_stream():
    frames = dumps(sample_object())
    garbage = bytes(len(frames[1]))

    with pytest.raises(SerializationError, match="cannot unpickle"):
        loads([frames[0], garbage, *frames[2:]])


@pytest.mark.parametrize("frames", [b"\x00\x01", "text", 42, None, [b"ok", 3]])
def test_not_a_frame_list(frames):
    with pytest.raises(SerializationError):
        loads(frames)


def test_missing_module_on_the_receiving_side_is_a_serialization_error():
    frames = dumps(sample_object())
    stream = bytes(frames[1]).replace(b"numpy", b"nompy")

    with pytest.raises(SerializationError, match="nompy") as info:
        loads([frames[0], stream, *frames[2:]])
    assert isinstance(info.value.__cause__, ImportError)


# ------------------------------------------------------------------------ content_id


def test_content_id_equal_for_equal_content():
    a, b = sample_object(), sample_object()
    assert a is not b

    frames = dumps(a)
    ids = {
        content_id(frames),
        content_id(dumps(b)),
        content_id([bytes(f) for f in frames]),  # as received
        content_id([bytearray(f) for f in frames]),
    }

    assert len(ids) == 1
    (digest,) = ids
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_content_id_differs_for_different_content():
    base = sample_object()
    changed_big = sample_object()
    changed_big["X"][-1, -1] += 1
    changed_small = sample_object()
    changed_small["small"][0] = 2
    other_dtype = sample_object()
    other_dtype["X"] = other_dtype["X"].view(np.int64)  # same bytes, other meaning
    renamed = sample_object()
    renamed["name"] = "contexu"

    ids = [content_id(dumps(obj)) for obj in (base, changed_big, changed_small, other_dtype, renamed)]

    assert len(set(ids)) == len(ids)


def test_content_id_ignores_frame_splitting_but_not_buffer_boundaries():
    original = sample_object()
    frames = dumps(original)
    with mock.patch.object(codec, "MAX_FRAME_BYTES", 1000):
        split = dumps(original)
    assert len(split) > len(frames)
    assert content_id(split) == content_id(frames)

    # The same bytes cut differently between the two buffers is other content.
    header = msgpack.unpackb(frames[0], raw=False)
    first, second = bytes(frames[2]), bytes(frames[3])
    header["buffers"][0]["nbytes"] -= 8
    header["buffers"][1]["nbytes"] += 8
    moved = [msgpack.packb(header), frames[1], first[:-8], first[-8:] + second]
    assert content_id(moved) != content_id(frames)


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20, None])
def test_content_hasher_fed_in_pieces_gives_content_id(piece):
    frames = dumps(sample_object())
    sizes = [memoryview(f).nbytes for f in frames]
    stream = b"".join(bytes(f) for f in frames)
    for threads in (1, -1):
        hasher = ContentHasher(sizes, max_threads=threads)
        if piece is None:  # whole frames, as content_id feeds them
            for frame in frames:
                hasher.update(frame)
        else:  # cut anywhere, frames split and merged
            for start in range(0, len(stream), piece):
                hasher.update(stream[start : start + piece])
                hasher.update(b"")
        assert hasher.hexdigest() == hasher.hexdigest() == content_id(frames)


def test_content_hasher_refuses_missing_or_extra_bytes_and_bad_sizes():
    frames = dumps(sample_object())
    sizes = [memoryview(f).nbytes for f in frames]
    stream = b"".join(bytes(f) for f in frames)
    hasher = ContentHasher(sizes)
    hasher.update(stream[:-1])
    with pytest.raises(SerializationError, match="truncated"):
        hasher.hexdigest()
    with pytest.raises(SerializationError, match="beyond the"):
        hasher.update(stream[-1:] + b"extra")
    with pytest.raises(SerializationError, match="msgpack header"):
        ContentHasher([3, 0]).update(b"\xc1no")
    with pytest.raises(SerializationError, match="describe no serialized object"):
        ContentHasher([5])
    with pytest.raises(SerializationError, match="exceeds"):
        ContentHasher([1 << 40, 0])


def test_content_id_is_stable_across_processes(foreign_process):
    here = content_id(dumps({"X": np.arange(100_000.0), "k": [1, "a", (2.5, None)]}))

    assert foreign_process["fixed_id"] == here


def test_public_api_is_complete():
    import hpsearch.serialization as package

    assert set(package.__all__) == {
        "FORMAT_VERSION", "MAX_FRAME_BYTES", "OUT_OF_BAND_THRESHOLD", "ContentHasher", "Frame",
        "SerializationError", "content_id", "dumps", "loads",
    }  # fmt: skip
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert FORMAT_VERSION == 1
