"""The public namespace: everything public is exported, and exports exist."""

from __future__ import annotations

import hpsearch


def test_all_lists_every_public_name():
    names = {name: getattr(hpsearch, name) for name in dir(hpsearch)}  # lazy names (DaskWorkers) too
    public = {
        name
        for name, value in names.items()
        if not name.startswith("_") and not getattr(value, "__name__", "").startswith("hpsearch.")
        and name not in {"annotations"}
    }
    modules = {name for name, value in names.items() if type(value).__name__ == "module"}
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


def test_worker_processes_do_not_import_dask():
    """Every hpsearch-worker and warm local process imports hpsearch; Dask's ``distributed``
    costs about half a second of that start-up and only DaskWorkers needs it."""
    import subprocess
    import sys

    code = (
        "import sys, hpsearch, hpsearch.workers.agent, hpsearch.worker_cli\n"
        "print('distributed' in sys.modules)\n"
        "from hpsearch import DaskWorkers\n"
        "from hpsearch.workers import DaskWorker\n"
        "print(DaskWorkers.__module__, DaskWorker.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "hpsearch.workers.dask", "hpsearch.workers.dask"]


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    import hpsearch.workers

    for module in (hpsearch, hpsearch.workers):
        with pytest.raises(AttributeError, match="has no attribute 'NoSuchPool'"):
            module.NoSuchPool  # noqa: B018
