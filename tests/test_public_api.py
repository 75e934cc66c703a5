"""The public namespace: everything public is exported, and exports exist."""

from __future__ import annotations

import hpsearch


def test_all_lists_every_public_name():
    public = {
        name
        for name, value in vars(hpsearch).items()
        if not name.startswith("_") and not getattr(value, "__name__", "").startswith("hpsearch.")
        and name not in {"annotations"}
    }
    modules = {name for name, value in vars(hpsearch).items() if type(value).__name__ == "module"}
    assert public - modules == set(hpsearch.__all__)


def test_every_export_is_documented():
    for name in hpsearch.__all__:
        assert getattr(hpsearch, name).__doc__, f"hpsearch.{name} has no docstring"


def test_importing_hpsearch_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, hpsearch, hpsearch.estimators; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
