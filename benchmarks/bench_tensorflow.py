"""Wall time of a TensorFlow model search with 1 and 2 workers.

The search: ``run_search`` over ``hidden_units`` x ``dropout`` of an ``MLPClassifier``
behind a char n-gram ``CountVectorizer`` (generated movie reviews, 3-fold CV), the same
search as ``tests/estimators/test_search.py``. Run by hand::

    python benchmarks/bench_tensorflow.py [--samples 600] [--epochs 10] [--repeat 1]

It prints one line per worker set-up with the wall time and the ratio to one thread,
checks that every set-up found the same scores, and says whether the runs used a GPU
(skipped when ``tf.config.list_physical_devices("GPU")`` is empty).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from hpsearch import LocalProcesses, run_search  # noqa: E402
from tests.estimators.reviews import SPACE, make_pipeline, make_reviews  # noqa: E402

# name -> builds the ``workers`` argument; add a LocalProcesses(2) entry beside these.
SETUPS: dict[str, Callable[[], object]] = {
    "threads-1": lambda: 1,
    "threads-2": lambda: 2,
    # Separate processes: each has its own TensorFlow thread pools, sized to its share.
    "processes-2": lambda: LocalProcesses(2),
}


def time_search(make_workers, texts, labels, n_epochs, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run_search(make_pipeline(n_epochs), SPACE, texts, labels, cv=3, workers=make_workers(),
                            refit=False, progress=False)
        best = min(best, time.perf_counter() - start)
    return best, result.cv_results_["mean_test_score"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="report the best of this many runs")
    args = parser.parse_args(argv)

    from hpsearch.estimators import import_tensorflow

    tf, _ = import_tensorflow()
    texts, labels = make_reviews(args.samples)
    n_fits = 3 * int(np.prod([len(v) for v in SPACE.values()]))
    print(f"search: {n_fits} fits of MLPClassifier, {args.samples} reviews, {args.epochs} epochs, "
          f"{os.cpu_count()} cores, TensorFlow {tf.__version__}")
    time_search(SETUPS["threads-1"], texts[:60], labels[:60], 1, 1)  # warm-up: imports, first traces

    reference_time, reference_scores = None, None
    for name, make_workers in SETUPS.items():
        seconds, scores = time_search(make_workers, texts, labels, args.epochs, args.repeat)
        if reference_time is None:
            reference_time, reference_scores = seconds, scores
        same = "same scores" if np.array_equal(scores, reference_scores) else "DIFFERENT SCORES"
        print(f"  {name:<12} {seconds:7.2f} s   x{reference_time / seconds:4.2f} vs threads-1   {same}")

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("GPU run skipped: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)")
    else:
        # TensorFlow places ops on a visible GPU by default (device scopes are per thread,
        # so they would not reach the worker threads): the runs above were the GPU runs.
        print(f"GPU run: the runs above used {[g.name for g in gpus]}; for CPU figures run again "
              "with CUDA_VISIBLE_DEVICES= set to the empty string")

if __name__ == "__main__":
    main()
