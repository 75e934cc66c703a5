"""hpsearch works without TensorFlow: it is imported lazily, and its absence is reported clearly.

These tests run in subprocesses (a clean ``sys.modules``) and never import TensorFlow,
so they run whether or not it is installed.
"""

import os
import subprocess
import sys


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_importing_hpsearch_and_its_estimators_does_not_import_tensorflow():
    result = run_python(
        "import sys, hpsearch, hpsearch.estimators\n"
        "from hpsearch.estimators import MLPClassifier, MLPRegressor, configure_tensorflow\n"
        "MLPClassifier(hidden_units=(8,)).get_params()\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'tensorflow was imported'\n"
    )
    assert result.returncode == 0, result.stderr


MISSING_TENSORFLOW = """
import os, sys
sys.modules["tensorflow"] = None  # what Python sees for a package that is not installed
from hpsearch.errors import MissingDependencyError
from hpsearch.estimators import MLPClassifier, MLPRegressor, configure_tensorflow, import_tensorflow

calls = {
    "classifier fit": lambda: MLPClassifier().fit([[0.0], [1.0]], [0, 1]),
    "regressor fit": lambda: MLPRegressor().fit([[0.0], [1.0]], [0.0, 1.0]),
    "configure_tensorflow": lambda: configure_tensorflow(gpu="0", intra_op_threads=1),
}
for name, call in calls.items():
    try:
        call()
    except MissingDependencyError as exc:
        assert isinstance(exc, ImportError), name
        assert "pip install hpsearch[tensorflow]" in str(exc), (name, str(exc))
    else:
        raise SystemExit(f"{name}: no MissingDependencyError")

# TensorFlow's C++ log level: "2" by default, but a user's own setting wins
assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
try:
    import_tensorflow()
except ImportError:
    pass
assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
print("ok")
"""


def test_missing_tensorflow_names_the_extra_to_install():
    result = run_python(MISSING_TENSORFLOW)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
