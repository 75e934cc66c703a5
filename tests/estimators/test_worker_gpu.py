"""hpsearch-worker's TensorFlow preparation: GPU pinning and thread pools per slot."""

import json
import subprocess
import sys

import pytest

from hpsearch.worker_cli import build_parser


def run_in_fresh_process(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpu_flag_is_parsed():
    args = build_parser().parse_args(["--connect", "tcp://127.0.0.1:5555", "--gpu", "1"])
    assert args.gpu == "1"
    assert build_parser().parse_args(["--connect", "tcp://127.0.0.1:5555"]).gpu is None


def test_without_gpu_tensorflow_is_sized_but_not_imported():
    got = run_in_fresh_process(
        "import json, sys; from hpsearch.worker_cli import prepare_tensorflow;"
        "env = prepare_tensorflow(slots=3, inner_threads=2);"
        "print(json.dumps({'env': env, 'tf': 'tensorflow' in sys.modules}))"
    )
    assert got == {"env": {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "3"}, "tf": False}


@pytest.mark.tensorflow
def test_gpu_pins_the_process_before_tensorflow_loads():
    pytest.importorskip("tensorflow")
    got = run_in_fresh_process(
        "import json; from hpsearch.worker_cli import prepare_tensorflow;"
        "env = prepare_tensorflow(slots=2, inner_threads=1, gpu='');"
        "import tensorflow as tf;"
        "print(json.dumps({'env': env, 'intra': tf.config.threading.get_intra_op_parallelism_threads(),"
        " 'gpus': len(tf.config.list_physical_devices('GPU'))}))"
    )
    assert got["env"]["CUDA_VISIBLE_DEVICES"] == "" and got["gpus"] == 0
    assert got["env"]["TF_NUM_INTRAOP_THREADS"] == "1" and got["env"]["TF_NUM_INTEROP_THREADS"] == "2"
