"""The hpsearch wire protocol: tokens, framing, signatures, message validation.

One logical message is one ZeroMQ multipart message; its first frame, the envelope,
holds the magic, the signature and the header::

    F0  envelope:
        b"HPS" + bytes([PROTOCOL_MAJOR])       magic and protocol major (4 bytes)
        mode (1 byte)                           b"B": payload signed byte by byte,
                                                b"C": content-addressed (CONTEXT only)
        signature (32 bytes)                    keyed BLAKE2b, see below
        header (the rest)                       msgpack map: type, seq, session, fields
    F1… payload frames                          serialization output (CONTEXT, TASK, CALL)

The signature is ``B(magic ‖ mode ‖ len(header) ‖ header ‖ P)`` where ``B`` is BLAKE2b
keyed with the search secret and ``P = B(len(f) ‖ f for every payload frame f)``; the
length prefixes make frame boundaries part of what is signed. Everything is checked
with :func:`hmac.compare_digest` before a single byte of the header is decoded.

One envelope frame, not three: every frame costs a pyzmq call that releases and
retakes the GIL, which the master's I/O thread then competes for with the
scheduler's; with tiny tasks that was a fifth of the CPU per task.

CONTEXT chunks (mode ``C``) are signed over their frame lengths only,
``P = B(len(f) for every payload frame f)``: their bytes are authenticated as a whole
by the context's content id, which the SEARCH and CONTEXT headers carry (signed) and
which the worker recomputes from the bytes it received, while they arrive, before it
unpickles anything. The master hashes a dataset once (the content id) instead of
once more per chunk, and the worker once instead of once per chunk and once for the id.

This module holds no socket: :class:`Codec` encodes and checks, the master
(:mod:`hpsearch.workers.remote`) and the worker (:mod:`hpsearch.workers.agent`) do I/O.
The full message table is in ``hpsearch/workers/PROTOCOL.md``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import platform
import secrets
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import ProtocolError

logger = logging.getLogger(__name__)

__all__ = [
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "MAGIC",
    "MODE_BYTES",
    "MODE_CONTENT",
    "CONTENT_ADDRESSED",
    "Codec",
    "MasterFilter",
    "Message",
    "make_token",
    "parse_token",
    "curve_keys",
    "with_server_key",
    "server_key",
    "local_versions",
    "version_mismatch",
    "MASTER_TYPES",
    "WORKER_TYPES",
]

PROTOCOL_MAJOR = 1
# 1.1: CONTEXT chunks are signed by length and checked against the content id.
# 1.2: every master message names the worker session it is for ("to").
# 1.3: HELLO is bound to the master by a CHALLENGE nonce; RESULT only for assigned tasks.
# 1.4: TASKS (several tasks in one message) and RESULTS (several results in one);
#      CALL / CALL_RESULT: a pickled function run on a slot (the joblib backend).
# While hpsearch is below 1.0, a minor step may be incompatible: HELLO compares
# major.minor (see _MATCH_PARTS), so mismatched workers get a REJECT naming both.
PROTOCOL_MINOR = 4
MAGIC = b"HPS" + bytes([PROTOCOL_MAJOR])
#: Envelope modes: payload signed byte by byte, or by length (content-addressed).
MODE_BYTES, MODE_CONTENT = b"B", b"C"
#: Bytes before the header in an envelope: magic, mode, signature.
ENVELOPE_PREFIX = len(MAGIC) + 1 + 32
#: The message types whose payload is content-addressed (and only those).
CONTENT_ADDRESSED = frozenset({"CONTEXT"})
TOKEN_PREFIX = "hps1:"
SIGNATURE_SIZE = 32
MAX_HEADER_SIZE = 1 << 20  # 1 MiB: headers are small maps; payloads travel in frames

_LEN = struct.Struct("<Q")

# Required fields of each message type: name -> accepted Python types.
_INT = (int,)
_STR = (str,)
_OPT_STR = (str, type(None))
_LIST = (list,)
_MAP = (dict,)
_BOOL = (bool,)

#: Messages a worker sends to the master, with their required fields.
WORKER_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "HELLO": {
        "worker_id": _STR, "name": _STR, "host": _STR, "pid": _INT, "slots": _INT,
        "versions": _MAP, "contexts": _LIST,
        # nil in the first HELLO of a connection; the second carries the CHALLENGE's nonce.
        "nonce": _OPT_STR,
    },
    "READY": {"search": _INT, "context_id": _STR, "error": _OPT_STR},
    "NEED": {"search": _INT, "context_id": _OPT_STR, "credit": _INT},
    "CREDIT": {"search": _INT, "context_id": _OPT_STR, "credit": _INT},
    "RESULT": {"search": _INT, "task_id": _INT, "attempt": _INT, "result": (dict, type(None)),
               "failure": _OPT_STR},
    # [[task_id, attempt, result, failure], ...]: RESULT's fields, for several tasks.
    "RESULTS": {"search": _INT, "results": _LIST},
    "HEARTBEAT": {},
    "BYE": {"reason": _STR},
    # A CALL's result: its pickle in parts (data), or failure, or the buffers it lacks.
    "CALL_RESULT": {"call": _INT, "part": _INT, "parts": _INT, "data": (bytes, type(None)),
                    "failure": _OPT_STR, "missing": (list, type(None))},
}

#: Messages the master sends to a worker, with their required fields.
MASTER_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "CHALLENGE": {"nonce": _STR},
    "WELCOME": {"name": _STR, "heartbeat": (float, int), "timeout": (float, int)},
    "REJECT": {"reason": _STR},
    # context_id is nil while the master is still hashing (sent only to workers that
    # hold no context); the last CONTEXT chunk always carries it.
    "SEARCH": {"search": _INT, "context_id": _OPT_STR, "nbytes": _INT},
    "CONTEXT": {"search": _INT, "context_id": _OPT_STR, "index": _INT, "count": _INT},
    "TASK": {"search": _INT, "task_id": _INT, "attempt": _INT, "context_id": _STR, "fold": _INT},
    # [[task_id, attempt, fold, params], ...], params inline as in TASK; run in this order.
    "TASKS": {"search": _INT, "context_id": _STR, "tasks": _LIST},
    # [search, task_id, attempt] of results recorded; TASK may carry "acks" too.
    "RESULT_ACK": {"acks": _LIST},
    "CANCEL": {"search": _INT},
    # A pickled call (payload: its two head frames, then the buffers named in "sent").
    "CALL": {"call": _INT, "ids": _LIST, "sent": _LIST},
    "HEARTBEAT": {},
    "SHUTDOWN": {"exit": _BOOL, "reason": _STR},
}
# Every master message names the worker session it is for: the master's sequence
# numbers are shared by all its workers, so without it a message recorded on its way
# to one worker could be replayed to another. The worker checks it (nil is a master
# older than protocol 1.2: only its REJECT is still read, to say why).
for _fields in MASTER_TYPES.values():
    _fields["to"] = _OPT_STR
del _fields


# -- tokens ---------------------------------------------------------------------------


def make_token(nbytes: int = 32) -> str:
    """A fresh join token: ``hps1:`` and a url-safe base64 secret.

    Examples
    --------
    >>> token = make_token()
    >>> token.startswith("hps1:") and len(parse_token(token)) == 32
    True
    """
    secret = secrets.token_bytes(nbytes)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secret).decode("ascii").rstrip("=")


def parse_token(token: str) -> bytes:
    """The secret inside a join token; raises ``ValueError`` with the rule broken.

    A join token is ``hps1:SECRET`` or, for a master that encrypts,
    ``hps1:SECRET.KEY`` where ``KEY`` is its CurveZMQ public key (url-safe base64;
    see :func:`server_key`).
    """
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise ValueError(
            f"a join token must start with {TOKEN_PREFIX!r} (as printed by the master), "
            f"got {_preview(token)}"
        )
    body = token[len(TOKEN_PREFIX):].strip().partition(".")[0]
    try:
        secret = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise ValueError(f"the join token {_preview(token)} is not valid url-safe base64") from None
    if len(secret) < 16:
        raise ValueError(
            f"the join token holds a {len(secret)}-byte secret; at least 16 bytes are required"
        )
    return secret


def curve_keys(secret: bytes, role: str = "master") -> tuple[bytes, bytes]:
    """A CurveZMQ key pair ``(public, secret)`` (Z85) derived from the token's secret.

    ``role`` is ``"master"`` (the server's pair) or ``"worker"`` (the one pair all
    workers present; the master admits no other client key, so without the token
    nothing gets past the handshake, not even a frame).

    Derived, not drawn: a master restarted with the same token has the same keys, so
    workers waiting with its join token reconnect. Only token holders can derive the
    secret key, and they are trusted with the data anyway; CurveZMQ's short-term keys
    per connection keep recorded traffic closed even to them.

    Examples
    --------
    >>> public, secret = curve_keys(b"0" * 32)
    >>> len(public), len(secret), curve_keys(b"0" * 32) == (public, secret)
    (40, 40, True)
    """
    import zmq
    from zmq.utils import z85

    key = hashlib.blake2b(secret, digest_size=32, person=b"hpsearch-curve",
                          salt=role.encode()[:16].ljust(16, b"\0")).digest()
    secret_z85 = z85.encode(key)
    return zmq.curve_public(secret_z85), secret_z85


def with_server_key(token: str, public: bytes | None) -> str:
    """``token`` carrying the master's CurveZMQ public key (``None``: carrying none).

    Examples
    --------
    >>> token = make_token()
    >>> joined = with_server_key(token, curve_keys(parse_token(token))[0])
    >>> parse_token(joined) == parse_token(token), server_key(joined) is not None, server_key(token)
    (True, True, None)
    """
    from zmq.utils import z85

    base = token.strip().partition(".")[0]
    if public is None:
        return base
    return base + "." + base64.urlsafe_b64encode(z85.decode(public)).decode("ascii").rstrip("=")


def server_key(token: str) -> bytes | None:
    """The master's CurveZMQ public key (Z85) a join token carries, or None (no encryption)."""
    from zmq.utils import z85

    key = token.strip().partition(".")[2]
    if not key:
        return None
    try:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    except (ValueError, TypeError):
        raise ValueError("the join token's key part is not valid url-safe base64") from None
    if len(raw) != 32:
        raise ValueError(f"the join token's key part holds {len(raw)} bytes, not a 32-byte CurveZMQ key")
    return z85.encode(raw)


def _preview(token: Any) -> str:
    text = repr(token)
    return text if len(text) <= 16 else text[:12] + "...'"


# -- versions ---------------------------------------------------------------------------


def local_versions(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The versions a worker announces in HELLO (and the master compares with its own)."""
    import cloudpickle
    import numpy
    import sklearn

    from .. import __version__

    versions = {
        "protocol": f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
        "python": platform.python_version(),
        "hpsearch": __version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "cloudpickle": cloudpickle.__version__,
    }
    versions.update(overrides or {})
    return versions


# How many leading version components must match, per package.
_MATCH_PARTS = {"protocol": 2, "python": 2, "hpsearch": 3, "numpy": 1, "scikit-learn": 2, "cloudpickle": 1}


def version_mismatch(master: Mapping[str, str], worker: Mapping[str, Any]) -> str | None:
    """A reason naming both sides when the worker cannot serve this master, else None."""
    problems = []
    for name, parts in _MATCH_PARTS.items():
        mine, theirs = master.get(name), worker.get(name)
        if not isinstance(theirs, str):
            problems.append(f"{name}: master {mine}, worker did not say")
        elif mine is None or mine.split(".")[:parts] != theirs.split(".")[:parts]:
            problems.append(f"{name}: master {mine}, worker {theirs}")
    if not problems:
        return None
    return (
        "incompatible versions (" + "; ".join(problems) + "). Install the same versions "
        "of these packages on the master and the worker"
    )


# -- messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded, authenticated, validated message."""

    type: str
    session: str
    seq: int
    header: dict[str, Any]
    payload: list[Any]
    content_addressed: bool = False

    def __getitem__(self, key: str) -> Any:
        return self.header[key]


def _unpack_header(raw: bytes | memoryview) -> Any:
    size = len(raw)
    return msgpack.unpackb(
        raw,
        raw=False,
        strict_map_key=True,
        use_list=True,
        max_str_len=size,
        max_bin_len=size,
        max_array_len=size,
        max_map_len=size,
        max_ext_len=0,
    )


class Codec:
    """Signs and checks messages for one side of one connection.

    Parameters
    ----------
    secret : bytes
        The search secret from the join token.
    accepts : dict
        The message types this side accepts (``WORKER_TYPES`` on the master).
    session : str, optional
        This side's session id; a fresh random one by default.

    The sending sequence number grows by one per message; the receiving side keeps the
    last sequence number seen per peer session and refuses anything not newer (the
    master's :class:`~hpsearch.workers.peers.PeerTable`, a worker's :class:`MasterFilter`).
    """

    def __init__(self, secret: bytes, accepts: Mapping[str, Mapping[str, tuple[type, ...]]],
                 session: str | None = None) -> None:
        if not secret:
            raise ValueError("an empty secret cannot sign messages")
        self._key = bytes(secret)
        self._accepts = accepts
        self.session = session or secrets.token_hex(8)
        self._seq = 0

    def new_session(self) -> None:
        """Start a new session (a worker does on every reconnect)."""
        self.session = secrets.token_hex(8)
        self._seq = 0

    # -- signing --------------------------------------------------------------------------

    def payload_digest(self, frames: Sequence[Any], lengths_only: bool = False) -> bytes:
        """The keyed digest of payload frames: their bytes, or only their lengths."""
        h = hashlib.blake2b(key=self._key, digest_size=SIGNATURE_SIZE)
        for frame in frames:
            view = memoryview(frame)
            h.update(_LEN.pack(view.nbytes))
            if not lengths_only:
                h.update(view)
        return h.digest()

    def _signature(self, prefix: Any, header: Any, digest: bytes) -> bytes:
        """The signature over magic and mode (``prefix``), the header and the payload digest."""
        h = hashlib.blake2b(key=self._key, digest_size=SIGNATURE_SIZE)
        h.update(prefix)
        h.update(_LEN.pack(len(header)))
        h.update(header)
        h.update(digest)
        return h.digest()

    def encode(self, type_: str, fields: Mapping[str, Any] | None = None,
               payload: Sequence[Any] = (), to: str | None = None) -> list[Any]:
        """The frames of one signed message (payload frames are not copied).

        ``to`` names the receiver's session (the master's messages all do). The payload
        of a CONTEXT message is signed by length only: its bytes must be checked
        against the content id by the receiver (see the module docstring).
        """
        self._seq += 1
        header = {"type": type_, "seq": self._seq, "session": self.session}
        if to is not None:
            header["to"] = to
        if fields:
            header.update(fields)
        raw = msgpack.packb(header, use_bin_type=True)
        lengths_only = type_ in CONTENT_ADDRESSED
        prefix = MAGIC + (MODE_CONTENT if lengths_only else MODE_BYTES)
        digest = self.payload_digest(payload, lengths_only)
        return [prefix + self._signature(prefix, raw, digest) + raw, *payload]

    # -- checking -------------------------------------------------------------------------

    def decode(self, frames: Sequence[Any]) -> Message:
        """Authenticate, decode and validate; raises ``ProtocolError`` saying why not."""
        if not frames:
            raise ProtocolError("empty message")
        envelope = memoryview(frames[0])
        if envelope.nbytes < len(MAGIC) or bytes(envelope[:3]) != MAGIC[:3]:
            raise ProtocolError("not an hpsearch message (bad magic)")
        if envelope[3] != PROTOCOL_MAJOR:
            raise ProtocolError(
                f"protocol major version {envelope[3]} received, this side speaks {PROTOCOL_MAJOR}"
            )
        if envelope.nbytes < ENVELOPE_PREFIX:
            raise ProtocolError(f"truncated envelope of {envelope.nbytes} bytes: unsigned or cut short")
        prefix, mode = envelope[:5], bytes(envelope[4:5])
        if mode not in (MODE_BYTES, MODE_CONTENT):
            raise ProtocolError(f"unknown payload mode {mode!r}")
        content_addressed = mode == MODE_CONTENT
        signature, raw = envelope[5:ENVELOPE_PREFIX], envelope[ENVELOPE_PREFIX:]
        if raw.nbytes > MAX_HEADER_SIZE:
            raise ProtocolError(f"header of {raw.nbytes} bytes exceeds {MAX_HEADER_SIZE}")
        payload = list(frames[1:])
        expected = self._signature(prefix, raw, self.payload_digest(payload, content_addressed))
        if not hmac.compare_digest(expected, signature):
            raise ProtocolError("bad signature (wrong token, or a forged or altered message)")
        try:
            header = _unpack_header(raw)
        except Exception as exc:  # msgpack raises many types on garbage
            raise ProtocolError(f"undecodable header: {type(exc).__name__}: {exc}") from None
        type_, session, seq = _validate(header, self._accepts)
        if content_addressed != (type_ in CONTENT_ADDRESSED):
            raise ProtocolError(f"{type_} with {'a content-addressed' if content_addressed else 'a byte-signed'} "
                                "payload: only CONTEXT chunks are signed by length")
        return Message(type_, session, seq, header, payload, content_addressed)


class MasterFilter:
    """What a worker accepts from masters, on one connection (no I/O).

    Only messages addressed to this worker's current session (the codec's), from the
    master session that said WELCOME, each newer than the last: the master's sequence
    numbers are shared by its workers, so a message for another worker, an earlier
    session of this one, or a replay would otherwise pass as new. :meth:`reset` starts
    over for a new connection.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.master: str | None = None  # the master session that said WELCOME
        self.seq = 0

    def reset(self) -> None:
        self.master = None
        self.seq = 0

    def accept(self, msg: Message) -> bool:
        """Whether to act on ``msg`` (a decoded, authenticated message); logs refusals."""
        to = msg.header.get("to")
        if to != self.codec.session:
            if to is None and msg.type == "REJECT" and self.master is None:
                # A master older than protocol 1.2 names no recipient: its REJECT (signed,
                # before any WELCOME) still tells this worker why it cannot join.
                return True
            logger.warning("dropped a %s addressed to another worker session", msg.type)
            return False
        if self.master is None:
            if msg.type == "CHALLENGE":
                # Answered by the HELLO that binds this session to that master; it
                # proves nothing about the master (the WELCOME that follows does).
                return True
            if msg.type not in ("WELCOME", "REJECT"):
                logger.warning("dropped %s: no WELCOME yet", msg.type)
                return False
            self.master = msg.session
        elif msg.session != self.master or msg.seq <= self.seq:
            if msg.session != self.master and msg.type == "SHUTDOWN" and not msg["exit"]:
                # Signed by another master now on this address (restarted with the same
                # token), answering this very session, which it does not know: say HELLO
                # again at once rather than after the silence timeout. Only a reconnect
                # is accepted this way, and once per session (the next has a new id).
                logger.info("another master asks this worker to say HELLO again")
                return True
            logger.warning("dropped a replayed or foreign %s from the master", msg.type)
            return False
        self.seq = msg.seq
        return True


def _validate(header: Any, accepts: Mapping[str, Mapping[str, tuple[type, ...]]]) -> tuple[str, str, int]:
    if not isinstance(header, dict):
        raise ProtocolError(f"header is a {type(header).__name__}, not a map")
    type_, session, seq = header.get("type"), header.get("session"), header.get("seq")
    if not isinstance(type_, str) or type_ not in accepts:
        raise ProtocolError(f"unknown or unexpected message type {type_!r}")
    if not isinstance(session, str) or not 0 < len(session) <= 64:
        raise ProtocolError("missing or bad session id")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ProtocolError("missing or bad sequence number")
    for name, types in accepts[type_].items():
        value = header.get(name)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ProtocolError(f"{type_} field {name!r} is {value!r}, expected {'/'.join(t.__name__ for t in types)}")
    return type_, session, seq


def host_name() -> str:
    """This machine's name, for worker names."""
    return platform.node() or os.environ.get("HOSTNAME", "host")

