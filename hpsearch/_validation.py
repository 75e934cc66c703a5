"""Argument checks shared by the strategies, the workers and the API."""

from __future__ import annotations

import numbers
from typing import Any

from .errors import InvalidParameterError


def check_integer(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, or an error naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
