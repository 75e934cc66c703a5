"""Suite-wide fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _close_warm_processes():
    """A test leaves no warm worker processes (nor their I/O thread) to the next."""
    yield
    from hpsearch.workers.local import close_warm_processes

    close_warm_processes()
