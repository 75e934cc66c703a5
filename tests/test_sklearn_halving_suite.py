"""scikit-learn's own test_successive_halving.py, with its Halving classes bound to hpsearch's.

The installed test file is copied into a temporary folder with
``HalvingGridSearchCV`` / ``HalvingRandomSearchCV`` imported from hpsearch instead of
scikit-learn, and run in a pytest subprocess: every one of its tests must pass (they
all pass with scikit-learn's classes; running them twice would double the minutes).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

SKLEARN_IMPORT = "    HalvingGridSearchCV,\n    HalvingRandomSearchCV,\n"


def run_suite(path: pathlib.Path) -> dict[str, str]:
    """Run one test file; test id -> "passed", "failed", "error" or "skipped"."""
    report = path.with_suffix(".xml")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider",
         f"--junitxml={report}", "-o", "addopts=", "--rootdir", str(path.parent), "--timeout", "600"],
        capture_output=True, text=True, timeout=900, cwd=path.parent, env=env,
    )
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name")
        kinds = {child.tag for child in case}
        outcomes[name] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                          else "skipped" if "skipped" in kinds else "passed")
    return outcomes


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scikit_learns_halving_tests_pass_with_hpsearchs_classes(tmp_path):
    import sklearn

    source = pathlib.Path(sklearn.__file__).parent / "model_selection" / "tests" / "test_successive_halving.py"
    text = source.read_text()
    assert SKLEARN_IMPORT in text, "scikit-learn's test file changed its imports"
    ours = tmp_path / "test_ours.py"
    ours.write_text(re.sub(
        r"\nfrom sklearn.svm import", "\nfrom hpsearch import HalvingGridSearchCV, HalvingRandomSearchCV\nfrom sklearn.svm import",
        text.replace(SKLEARN_IMPORT, ""), count=1,
    ))
    assert "from hpsearch import HalvingGridSearchCV" in ours.read_text()
    outcomes = run_suite(ours)
    assert len(outcomes) > 50
    bad = sorted(name for name, outcome in outcomes.items() if outcome in ("failed", "error"))
    assert not bad, f"{len(bad)} of {len(outcomes)} of scikit-learn's tests fail with hpsearch's classes: {bad}"
