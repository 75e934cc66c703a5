"""The definition of a search, as text and digests, to tell one search from another.

A search stored under a name is resumed only by a call that would compute the same
results: same estimator and parameters, search space, strategy and seed, CV splits,
data, fit params, scoring and error handling. Each of these is one *component*: a
readable text (shown when a rerun differs) and a BLAKE3 digest. Things that do not
change results (workers, refit, progress) are not part of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import blake3
import numpy as np

__all__ = ["Definition", "describe", "data_digest"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_TEXT = 2000
_PLAIN = (int, float, str, bool, type(None))


def _digest(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return blake3.blake3(data).hexdigest()[:32]


def describe(value: Any) -> str:
    """A canonical text of ``value``: equal for equal definitions across processes.

    Estimators are described by class and parameters (recursively), arrays by shape,
    dtype and a digest of their bytes, functions by their qualified name; anything
    else by ``repr`` without memory addresses.

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> describe(SVC(C=2.0))[:30]
    'sklearn.svm._classes.SVC(C=2.0'
    >>> describe({"b": [1, 2], "a": None})
    "{'a': None, 'b': [1, 2]}"
    """
    if type(value) is dict and all(type(v) in _PLAIN for v in value.values()) and all(
        type(k) is str for k in value
    ):  # candidate params, described once per candidate: the quick way, same text
        return "{" + ", ".join(f"{k!r}: {value[k]!r}" for k in sorted(value)) + "}"
    if hasattr(value, "get_params") and not isinstance(value, type):
        try:
            params = value.get_params(deep=False)
        except Exception:  # an object with a get_params that needs arguments
            params = None
        if isinstance(params, Mapping):
            inner = ", ".join(f"{k}={describe(params[k])}" for k in sorted(params))
            return f"{_qualname(type(value))}({inner})"
    if isinstance(value, np.random.RandomState):
        return f"RandomState(state={_digest(repr(value.get_state(legacy=False)))})"
    if isinstance(value, np.random.Generator):
        return f"Generator(state={_digest(repr(value.bit_generator.state))})"
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype}, digest={data_digest(value)})"
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))
        return "{" + ", ".join(f"{describe(k)}: {describe(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        if all(type(v) in _PLAIN for v in value):  # long lists of values in a space: quick
            inner = ", ".join(map(repr, value))
        else:
            inner = ", ".join(describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return _qualname(value)
    return _ADDRESS.sub("", repr(value))


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def data_digest(*arrays: Any) -> str:
    """A digest of array contents (numpy, pandas, sparse, lists), not of their identity."""
    from ..serialization import dumps
    from ..serialization.codec import content_id

    parts = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            arr = np.ascontiguousarray(a)
            if arr.dtype.hasobject:
                parts.append(content_id(dumps(arr)))
            else:
                h = blake3.blake3(f"{arr.dtype.str}{arr.shape}".encode())
                h.update(arr.data.cast("B"))
                parts.append(h.hexdigest())
        elif a is None:
            parts.append("none")
        else:
            parts.append(content_id(dumps(a)))
    return _digest("|".join(parts))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 20] + f"... ({len(text)} chars)"


class Definition:
    """The components of a search definition: name -> (text, digest).

    Examples
    --------
    >>> a = Definition({"space": "{'C': [1, 10]}", "seed": "0"})
    >>> b = Definition({"space": "{'C': [1, 100]}", "seed": "0"})
    >>> a.differences(b)
    ["space: stored {'C': [1, 10]}, now {'C': [1, 100]}"]
    """

    def __init__(self, texts: Mapping[str, str], digests: Mapping[str, str] | None = None) -> None:
        self.texts = {k: _clip(v) for k, v in texts.items()}
        self.digests = {k: (digests or {}).get(k) or _digest(v) for k, v in texts.items()}

    @property
    def fingerprint(self) -> str:
        return _digest("\n".join(f"{k}={self.digests[k]}" for k in sorted(self.digests)))

    def to_json(self) -> str:
        return json.dumps({k: {"text": self.texts[k], "digest": self.digests[k]} for k in sorted(self.texts)})

    @classmethod
    def from_json(cls, text: str) -> Definition:
        data = json.loads(text)
        return cls({k: v["text"] for k, v in data.items()}, {k: v["digest"] for k, v in data.items()})

    def differences(self, now: Definition) -> list[str]:
        """What differs from ``now``, one line per component (stored value first)."""
        out = []
        for key in sorted(set(self.digests) | set(now.digests)):
            if self.digests.get(key) != now.digests.get(key):
                old, new = self.texts.get(key, "(absent)"), now.texts.get(key, "(absent)")
                if old == new:  # same text, different content (data, arrays)
                    old, new = f"digest {self.digests.get(key)}", f"digest {now.digests.get(key)}"
                out.append(f"{key}: stored {old}, now {new}")
        return out
