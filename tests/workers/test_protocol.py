"""The framing layer alone: signatures, bounded decoding, validation, tokens, versions."""

from __future__ import annotations

import msgpack
import pytest

from hpsearch.errors import ProtocolError
from hpsearch.workers.protocol import (
    ENVELOPE_PREFIX,
    MAGIC,
    MASTER_TYPES,
    MODE_BYTES,
    MODE_CONTENT,
    WORKER_TYPES,
    Codec,
    local_versions,
    make_token,
    parse_token,
    version_mismatch,
)

SECRET = parse_token(make_token())


def test_round_trip_with_payload():
    # A codec is named by what it accepts: the worker's accepts what the master sends.
    worker, master = Codec(SECRET, MASTER_TYPES), Codec(SECRET, WORKER_TYPES)
    frames = master.encode("CONTEXT", {"search": 1, "context_id": "ab", "index": 0, "count": 1},
                           [b"x" * 10, memoryview(b"y" * 100_000)], to=worker.session)
    msg = worker.decode(frames)
    assert msg.type == "CONTEXT" and msg.seq == 1 and msg.session == master.session
    assert msg["to"] == worker.session
    assert [bytes(f) for f in msg.payload] == [b"x" * 10, b"y" * 100_000]
    assert master.encode("HEARTBEAT")[0][ENVELOPE_PREFIX:] != frames[0][ENVELOPE_PREFIX:]  # seq grows


@pytest.mark.parametrize("tamper", ["header", "payload", "magic", "mode", "signature", "frame-boundary"])
def test_any_change_breaks_the_signature(tamper):
    sender, receiver = Codec(SECRET, WORKER_TYPES), Codec(SECRET, MASTER_TYPES)
    frames = sender.encode("RESULT_ACK", {"acks": [[1, 3, 0]]}, [b"ab", b"cd"])
    frames = [bytearray(f) for f in frames]
    envelope = frames[0]
    if tamper == "header":
        envelope[ENVELOPE_PREFIX:] = envelope[ENVELOPE_PREFIX:].replace(b"\x03", b"\x04")
    elif tamper == "payload":
        frames[1] = bytearray(b"zz")
    elif tamper == "magic":
        envelope[3] = 2
    elif tamper == "mode":
        envelope[4:5] = MODE_CONTENT
    elif tamper == "signature":
        envelope[5:ENVELOPE_PREFIX] = bytes(32)
    else:  # moving a byte from one frame to the next
        frames[1:] = [bytearray(b"a"), bytearray(b"bcd")]
    with pytest.raises(ProtocolError):
        receiver.decode(frames)


def test_context_chunks_are_signed_by_length_every_other_payload_by_bytes():
    master, worker = Codec(SECRET, WORKER_TYPES), Codec(SECRET, MASTER_TYPES)
    fields = {"search": 1, "context_id": "ab", "index": 0, "count": 1}
    chunk = [bytes(f) for f in master.encode("CONTEXT", fields, [b"x" * 10, b"y" * 20], to="w")]
    assert chunk[0][:5] == MAGIC + MODE_CONTENT
    # Same lengths, other bytes: the signature holds; the worker's content-id check
    # (tests/workers/test_security.py) is what refuses such a chunk.
    msg = worker.decode(chunk[:1] + [b"z" * 10, b"y" * 20])
    assert msg.content_addressed and bytes(msg.payload[0]) == b"z" * 10
    relabelled = MAGIC + MODE_BYTES + chunk[0][5:]
    for tampered in (chunk[:1] + [b"x" * 11, b"y" * 19], chunk[:1] + [b"x" * 10], [relabelled, *chunk[1:]]):
        with pytest.raises(ProtocolError, match="bad signature"):
            worker.decode(tampered)
    task = {"search": 1, "task_id": 2, "attempt": 0, "context_id": "ab", "fold": 0}
    frames = [bytes(f) for f in master.encode("TASK", task, [b"params"], to="w")]
    assert frames[0][:5] == MAGIC + MODE_BYTES and not worker.decode(frames).content_addressed
    with pytest.raises(ProtocolError, match="bad signature"):
        worker.decode(frames[:1] + [b"PARAMS"])
    # Correctly signed, but a TASK claiming the length-only mode (or a CONTEXT not
    # claiming it) is refused: only CONTEXT chunks are checked by content id.
    for mode, kind, extra in ((MODE_CONTENT, "TASK", task), (MODE_BYTES, "CONTEXT", fields)):
        raw = msgpack.packb({"type": kind, "seq": 9, "session": "s", "to": "w", **extra})
        prefix = MAGIC + mode
        digest = master.payload_digest([b"p"], lengths_only=mode == MODE_CONTENT)
        with pytest.raises(ProtocolError, match="only CONTEXT chunks"):
            worker.decode([prefix + master._signature(prefix, raw, digest) + raw, b"p"])


def test_wrong_key_unsigned_truncated_and_garbage_are_refused():
    other = Codec(parse_token(make_token()), WORKER_TYPES)
    master = Codec(SECRET, WORKER_TYPES)
    good = Codec(SECRET, WORKER_TYPES).encode("HEARTBEAT")
    with pytest.raises(ProtocolError, match="bad signature"):
        master.decode(other.encode("HEARTBEAT"))
    with pytest.raises(ProtocolError, match="unsigned or cut short"):
        master.decode([good[0][:20]])
    with pytest.raises(ProtocolError, match="empty"):
        master.decode([])
    with pytest.raises(ProtocolError, match="magic"):
        master.decode([b"\x00" * 7 + b"garbage"])
    with pytest.raises(ProtocolError, match="protocol major"):
        master.decode([b"HPS\x09" + good[0][4:]])
    with pytest.raises(ProtocolError, match="mode"):
        master.decode([MAGIC + b"X" + good[0][5:]])
    with pytest.raises(ProtocolError, match="bad signature"):
        master.decode([good[0], b"an extra frame"])


def _signed_header(header: object) -> list[bytes]:
    """A correctly signed message whose header is arbitrary msgpack (or raw bytes)."""
    codec = Codec(SECRET, WORKER_TYPES)
    raw = header if isinstance(header, bytes) else msgpack.packb(header)
    prefix = MAGIC + MODE_BYTES
    return [prefix + codec._signature(prefix, raw, codec.payload_digest([])) + raw]


@pytest.mark.parametrize(
    "header, match",
    [
        (b"\xc1\xc1\xc1", "undecodable"),
        ([1, 2, 3], "not a map"),
        ({"type": "PWN", "seq": 1, "session": "s"}, "unknown"),
        ({"type": "TASK", "seq": 1, "session": "s"}, "unknown"),  # a master-only type from a worker
        ({"type": "HEARTBEAT", "seq": 0, "session": "s"}, "sequence"),
        ({"type": "HEARTBEAT", "seq": 1}, "session"),
        ({"type": "BYE", "seq": 1, "session": "s", "reason": 3}, "reason"),
        ({"type": "RESULT", "seq": 1, "session": "s", "search": 1, "task_id": True, "attempt": 0,
          "result": None, "failure": None}, "task_id"),
        ({1: 2}, "undecodable"),  # strict_map_key: non-string keys are refused by msgpack
    ],
)
def test_signed_but_malformed_headers_are_refused(header, match):
    with pytest.raises(ProtocolError, match=match):
        Codec(SECRET, WORKER_TYPES).decode(_signed_header(header))


def test_master_messages_carry_their_recipient_session():
    master, worker = Codec(SECRET, WORKER_TYPES), Codec(SECRET, MASTER_TYPES)
    assert worker.decode(master.encode("HEARTBEAT", to=worker.session))["to"] == worker.session
    # Left out only by masters older than protocol 1.2 (the worker drops such messages,
    # tests/workers/test_security.py); never anything but a string.
    assert "to" not in worker.decode(master.encode("HEARTBEAT")).header
    with pytest.raises(ProtocolError, match="field 'to'"):
        worker.decode(master.encode("HEARTBEAT", {"to": 7}))


def test_tokens():
    token = make_token()
    assert token.startswith("hps1:") and token != make_token()
    for bad in ["", "hps2:abc", "hps1:", "hps1:!!!notbase64", "hps1:c2hvcnQ"]:
        with pytest.raises(ValueError):
            parse_token(bad)


def test_version_mismatch_names_both_sides():
    mine = local_versions()
    assert version_mismatch(mine, dict(mine)) is None
    reason = version_mismatch(mine, local_versions({"hpsearch": "0.0.0", "python": "2.7.18"}))
    assert "hpsearch: master " + mine["hpsearch"] + ", worker 0.0.0" in reason
    assert "python" in reason and "2.7.18" in reason
    assert "worker did not say" in version_mismatch(mine, {})
