"""``hpsearch status``: the table for a finished and a running search, from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.cli import main
from hpsearch.storage import StorageError, load_search

from . import searches

ROOT = Path(__file__).resolve().parents[2]


def status(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "hpsearch", "status", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def status_here(capsys, *args):
    """The same command, run in this process."""
    code = main(["status", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_status_of_a_finished_and_a_running_search(tmp_path, capsys):
    db = tmp_path / "search.db"
    finished = searches.search("grid", storage=db, name="done")
    thread, errors = searches.start_gated_search(db, "live")
    try:
        out = status(db)
        stored = load_search(db, "live")
        with pytest.raises(StorageError, match=r"'live' .* is running now \(process \d+ on .*or use another name"):
            searches.run_search(searches.Gated(), searches.SPACES["grid"], searches.X, searches.Y, cv=searches.CV,
                                refit=False, progress=False, storage=db, name="live")
    finally:
        searches.GATE.set()
        thread.join(120)
    assert not errors and out.returncode == 0, (errors, out.stderr)
    header, done, live = out.stdout.splitlines()
    columns = ["name", "status", "candidates", "tasks", "best score", "failed fits", "workers", "elapsed",
               "best params"]
    assert [c for c in columns if c in header] == columns
    fields = done.split()
    assert fields[:7] == ["done", "finished", "16/16", "48/48", f"{finished.best_score_:.4f}", "0", "1"]
    assert done.endswith(", ".join(f"{k}={v}" for k, v in finished.best_params_.items()))
    fields = live.split()
    assert stored.status == "running"
    assert fields[:7] == ["live", "running", "15/16", "45/48", f"{stored.best['score']:.4f}", "6", "1"]
    assert live.endswith("n=1, x=0.3")

    code, out, _ = status_here(capsys, db, "--name", "done")
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = status_here(capsys, db)
    assert out.splitlines()[2].split()[:4] == ["live", "finished", "16/16", "48/48"]


def test_status_errors_are_one_clear_line(tmp_path, capsys):
    code, _, err = status_here(capsys, tmp_path / "missing.db")
    assert code == 2
    assert err.strip() == f"hpsearch: error: storage file {str(tmp_path / 'missing.db')!r} does not exist"
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 100)
    code, _, err = status_here(capsys, bad)
    assert code == 2 and "not a readable SQLite database" in err
