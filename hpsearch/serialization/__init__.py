"""Serialization of evaluation contexts and task payloads into wire frames.

``dumps(obj)`` turns any picklable object into a list of frames: a msgpack
header, a pickle stream (protocol 5; cloudpickle for lambdas, closures and
``__main__`` code) and the large buffers out-of-band, uncopied. ``loads``
rebuilds the object on the received buffers without copying them, read-only
by default. ``content_id`` is a content address of the frames, used to send a
context to each worker only once. Knows nothing about sockets.

>>> import numpy as np
>>> from hpsearch.serialization import content_id, dumps, loads
>>> X = np.zeros((1000, 20))
>>> frames = dumps({"X": X, "scorer": lambda est, X, y: 0.0})
>>> restored = loads(frames)
>>> restored["X"].flags.writeable
False
>>> len(content_id(frames))
64
"""

from __future__ import annotations

from ..errors import SerializationError
from .codec import (
    FORMAT_VERSION,
    MAX_FRAME_BYTES,
    OUT_OF_BAND_THRESHOLD,
    ContentHasher,
    Frame,
    content_id,
    dumps,
    loads,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_FRAME_BYTES",
    "OUT_OF_BAND_THRESHOLD",
    "ContentHasher",
    "Frame",
    "SerializationError",
    "content_id",
    "dumps",
    "loads",
]
