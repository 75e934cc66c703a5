"""Pipeline prefix reuse: a text search against scikit-learn and dask-ml, same run.

The search: ``TfidfVectorizer`` -> ``LinearSVC`` on a generated corpus (topic words
over a Zipf background, no download), ``vect__ngram_range`` over 2 values and
``clf__C`` over 10, 5-fold CV: 100 fits. scikit-learn fits the vectorizer 100 times;
hpsearch (prefix reuse on) and dask-ml (graph de-duplication) fit it 10 times.

Contenders, each on 2 workers, pools started once before timing:

* hpsearch ``run_search(workers=2)`` (threads) and ``workers=LocalProcesses(2)``,
  with prefix reuse, and the same on threads with ``prefix_cache=False`` (reference);
* scikit-learn ``GridSearchCV(n_jobs=2)`` (loky processes, warm);
* dask-ml ``GridSearchCV`` on a ``distributed.LocalCluster`` of 2 single-threaded
  worker processes.

Each is run once to warm up (and to check that all give the same mean test scores),
then ``--repeat`` times, interleaved; medians and ratios to scikit-learn are printed.

    python benchmarks/bench_pipeline.py [--repeat 3] [--docs 1000] [--words 100]

Targets: hpsearch at most 0.4x scikit-learn's time, and faster than dask-ml.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from hpsearch import LocalProcesses, run_search

GRID = {"vect__ngram_range": [(1, 1), (1, 2)], "clf__C": list(np.logspace(-2, 2, 10))}


def corpus(n_docs: int, n_words: int, n_topics: int = 4, vocabulary: int = 8000,
           seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Documents of ``n_topics`` classes: words from a shared Zipf background, one in
    four from the class's own topic words (so bigrams carry signal too)."""
    rng = np.random.RandomState(seed)
    words = np.array([f"w{i:05d}" for i in range(vocabulary)])
    background = 1.0 / np.arange(1, vocabulary + 1)
    background /= background.sum()
    topics = [rng.choice(vocabulary, 200, replace=False) for _ in range(n_topics)]
    y = rng.randint(0, n_topics, n_docs)
    docs = []
    for label in y:
        from_topic = rng.random_sample(n_words) < 0.25
        tokens = np.where(from_topic, rng.choice(topics[label], n_words), rng.choice(vocabulary, n_words, p=background))
        docs.append(" ".join(words[tokens]))
    return docs, y


def pipeline() -> Pipeline:
    return Pipeline([("vect", TfidfVectorizer()), ("clf", LinearSVC(random_state=0))])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--words", type=int, default=100)
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="distributed")
    docs, y = corpus(args.docs, args.words)

    from dask.distributed import Client, LocalCluster
    import dask_ml.model_selection as dask_ms

    with LocalProcesses(2) as processes, \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        contenders: dict[str, Callable[[], Any]] = {
            "hpsearch threads(2), reuse": lambda: run_search(pipeline(), GRID, docs, y, cv=5, workers=2,
                                                              refit=False, progress=False),
            "hpsearch LocalProcesses(2), reuse": lambda: run_search(pipeline(), GRID, docs, y, cv=5,
                                                                     workers=processes, refit=False, progress=False),
            "hpsearch threads(2), prefix_cache=False": lambda: run_search(
                pipeline(), GRID, docs, y, cv=5, workers=2, refit=False, progress=False, prefix_cache=False),
            "scikit-learn GridSearchCV(n_jobs=2)": lambda: GridSearchCV(pipeline(), GRID, cv=5, n_jobs=2,
                                                                        refit=False).fit(docs, y),
            "dask-ml GridSearchCV, LocalCluster(2)": lambda: dask_ms.GridSearchCV(
                pipeline(), GRID, cv=5, refit=False, scheduler=client).fit(docs, y),
        }
        reference = None
        for name, fn in contenders.items():  # warm-up and correctness check
            seconds, result = timed(fn)
            scores = np.asarray(result.cv_results_["mean_test_score"])
            if reference is None:
                reference = scores
            # dask-ml scores agree to rounding (it sums fold scores in another order).
            np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-12, err_msg=name)
            print(f"warm-up {name}: {seconds:.2f} s")
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.repeat):  # interleaved, so machine noise hits all alike
            for name, fn in contenders.items():
                times[name].append(timed(fn)[0])

    medians = {name: statistics.median(t) for name, t in times.items()}
    sklearn_time = medians["scikit-learn GridSearchCV(n_jobs=2)"]
    dask_time = medians["dask-ml GridSearchCV, LocalCluster(2)"]
    print(f"\nTfidfVectorizer + LinearSVC, {args.docs} docs x {args.words} words, 2 ngram x 10 C, cv=5 "
          f"(100 fits), 2 workers, median of {args.repeat}")
    for name, median in medians.items():
        print(f"  {name:42s} {median:7.2f} s   x{median / sklearn_time:5.2f} of scikit-learn   "
              f"x{median / dask_time:5.2f} of dask-ml   {sorted(round(t, 2) for t in times[name])}")
    print("  targets: hpsearch with reuse <= 0.40x scikit-learn, and < 1.00x dask-ml")


if __name__ == "__main__":
    main()
