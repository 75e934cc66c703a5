"""Large buffers are never copied by dumps, nor by loads when they fit one frame."""

from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest
import zmq

from hpsearch.serialization import MAX_FRAME_BYTES, dumps, loads

MiB = 1024 * 1024


def address(buffer) -> int:
    """Start address of an array's data or of a bytes-like object."""
    if not isinstance(buffer, np.ndarray):
        buffer = np.frombuffer(buffer, dtype=np.uint8)
    return int(buffer.__array_interface__["data"][0])


@pytest.fixture(scope="module")
def big_array():
    """256 MiB of float64, written so that its pages are really allocated."""
    array = np.empty(256 * MiB // 8, dtype=np.float64)
    array[:] = 1.5
    array[::4097] = np.arange(array[::4097].size)
    return array


def test_dumps_frames_share_memory_with_the_array(big_array):
    frames = dumps(big_array)

    payload = frames[2:]
    assert len(payload) == 256 * MiB // MAX_FRAME_BYTES  # split into 64 MiB frames
    start = address(big_array)
    for index, frame in enumerate(payload):
        assert isinstance(frame, memoryview)
        assert np.shares_memory(np.frombuffer(frame, dtype=np.uint8), big_array)
        assert address(frame) == start + index * MAX_FRAME_BYTES
    assert sum(frame.nbytes for frame in payload) == big_array.nbytes


def test_dumps_peak_memory_grows_by_less_than_ten_percent(big_array):
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        frames = dumps({"X": big_array, "y": big_array[:1000]})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(frames) > 2
    assert peak - before < 0.10 * big_array.nbytes, f"dumps allocated {peak - before} bytes"


def test_loads_of_dumps_frames_shares_memory_with_the_frames(big_array):
    frames = dumps(big_array)

    restored = loads(frames)

    # The split frames are adjacent slices of one block: joined without copy.
    assert np.shares_memory(restored, np.frombuffer(frames[2], dtype=np.uint8))
    assert address(restored) == address(frames[2])
    assert not restored.flags.writeable
    assert restored[4097 * 3] == 3.0 and restored[1] == 1.5


def test_loads_of_a_received_frame_rebuilds_on_it_without_copy():
    original = np.arange(4 * MiB, dtype=np.float64).reshape(-1, 8, order="F")
    received = [bytearray(frame) for frame in dumps(original)]  # as off the wire
    assert len(received) == 3

    read_only = loads(received)
    writeable = loads(received, writeable=True)

    for restored in (read_only, writeable):
        assert address(restored) == address(received[2])
        np.testing.assert_array_equal(restored, original)
        assert restored.flags.f_contiguous
    assert not read_only.flags.writeable
    assert writeable.flags.writeable
    writeable[0, 0] = -1.0  # writes land in the received frame: that is "no copy"
    assert read_only[0, 0] == -1.0


def test_split_frames_received_separately_are_joined_with_one_copy(big_array):
    received = [bytearray(frame) for frame in dumps(big_array)]  # 4 separate 64 MiB frames

    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        restored = loads(received)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert not np.shares_memory(restored, np.frombuffer(received[2], dtype=np.uint8))
    assert big_array.nbytes <= peak - before < 1.10 * big_array.nbytes  # exactly one copy
    assert not restored.flags.writeable
    assert np.array_equal(restored, big_array)


def test_read_only_frames_are_copied_only_when_writeable_data_is_asked():
    original = np.arange(MiB, dtype=np.int32)
    received = [bytes(frame) for frame in dumps(original)]

    shared = loads(received)
    private = loads(received, writeable=True)

    assert address(shared) == address(received[2])  # bytes used in place, read-only
    assert not shared.flags.writeable
    assert private.flags.writeable  # a bytes frame cannot back writeable data: copied
    assert address(private) != address(received[2])
    np.testing.assert_array_equal(private, original)


def test_buffers_read_only_on_the_sender_stay_read_only():
    original = np.arange(MiB, dtype=np.float64)
    original.flags.writeable = False
    frames = dumps(original)

    assert msgpack.unpackb(frames[0])["buffers"][0]["writeable"] is False
    assert not loads([bytearray(f) for f in frames], writeable=True).flags.writeable


def test_zmq_frames_round_trip_without_copy():
    original = np.random.default_rng(0).random((1000, 300))
    context = zmq.Context()
    sender = context.socket(zmq.PAIR)
    receiver = context.socket(zmq.PAIR)
    for sock in (sender, receiver):
        sock.linger = 0
    receiver.rcvtimeo = 5000
    try:
        receiver.bind("inproc://hpsearch-serialization-test")
        sender.connect("inproc://hpsearch-serialization-test")
        sender.send_multipart(dumps(original), copy=False)
        received = receiver.recv_multipart(copy=False)
    finally:
        sender.close()
        receiver.close()
        context.term()

    assert all(isinstance(frame, zmq.Frame) for frame in received)
    restored = loads(received)
    np.testing.assert_array_equal(restored, original)
    assert address(restored) == address(received[2].buffer)
    assert not restored.flags.writeable
