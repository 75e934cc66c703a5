from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from hpsearch.workers.local import child_environment


@pytest.fixture
def spawn_worker() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``python -m hpsearch.worker_cli`` processes; all are killed and reaped after the test."""
    procs: list[subprocess.Popen] = []

    def spawn(endpoint: str, token: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpsearch.worker_cli", "--connect", endpoint, "--token", token,
             "--log-level", "WARNING", *args],
            env=child_environment(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
