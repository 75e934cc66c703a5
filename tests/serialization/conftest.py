"""Fixtures shared by the serialization tests."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Runs in a separate interpreter, as a script: its classes and functions live
# in that process's __main__, which this process does not have.
FOREIGN_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    from hpsearch.serialization import content_id, dumps

    class Point:
        def __init__(self, x):
            self.x = x
        def norm(self):
            return abs(self.x)

    def double(v):
        return 2 * v

    frames = dumps({"p": Point(-4), "f": double, "X": np.arange(20_000.0)})
    fixed = content_id(dumps({"X": np.arange(100_000.0), "k": [1, "a", (2.5, None)]}))
    with open(sys.argv[1], "wb") as out:
        pickle.dump({"frames": [bytes(f) for f in frames], "fixed_id": fixed}, out)
    """
)


@pytest.fixture(scope="session")
def foreign_process(tmp_path_factory) -> dict:
    """What another Python process (another PYTHONHASHSEED) serialized.

    ``frames``: dumps of objects defined in that script's ``__main__``;
    ``fixed_id``: content_id of ``{"X": np.arange(100_000.0), "k": [1, "a", (2.5, None)]}``.
    One subprocess serves every test: importing hpsearch costs seconds.
    """
    path = tmp_path_factory.mktemp("foreign") / "out.pkl"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", FOREIGN_SCRIPT, str(path)], check=True, env=env, timeout=120)
    return pickle.loads(path.read_bytes())
