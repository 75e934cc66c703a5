"""Suite-wide fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _close_warm_processes():
    """A test leaves no warm worker processes (nor their I/O thread), nor what
    ``workers=N``'s probes found, to the next."""
    yield
    from hpsearch.workers.auto import forget_verdicts
    from hpsearch.workers.local import close_warm_processes

    close_warm_processes()
    forget_verdicts()
