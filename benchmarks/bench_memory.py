"""Memory of a search on a large X with 2 local worker processes, against loky.

    python benchmarks/bench_memory.py [--mb 500] [--repeat 3] [--cases subsample,kfold,subsample-memmap]

Each run is a fresh Python process (so nothing freed by an earlier run counts) that
builds X (``--mb`` MB of float64, 100 columns) and y, starts its pool of 2 worker
processes and warms it with a tiny search, then measures the search on X:

- ``hpsearch-shared``: ``run_search(workers=LocalProcesses(2))``, the large arrays
  mapped from one shared-memory segment (the default);
- ``hpsearch-copies``: the same with ``LocalProcesses(2, shared_memory=False)``, a copy
  of the data sent to each process (what hpsearch did before);
- ``loky``: ``GridSearchCV(n_jobs=2)``, whose joblib memmaps X (``max_nbytes='1M'``) into
  a folder its workers map;
- ``threads`` (with ``--contenders``): ``run_search(workers=2)``, 2 threads in the
  master: nothing is shipped, so its figure is the fits' own memory (fold copies, the
  estimator's work arrays), the floor under every pool of 2 workers.

The figure is the peak, over the search, of the memory of the whole process tree (the
master and every descendant) above its value just before the search, sampled every 20
ms; memory is PSS (``psutil.Process.memory_full_info().pss``: a shared page counts once
in all, split among the processes that map it), RSS where PSS is not available. The
ratio is that peak divided by the size of X. The machine's ``Shmem`` (``/proc/meminfo``)
above its start is printed too: memory files nobody maps are invisible to PSS.

Cases (both estimators fit ``Ridge`` for 2 alphas; the split is the same for all):

- ``subsample``: ``ShuffleSplit(4, train_size=0.05, test_size=0.05)``: folds are small,
  so the figure is what it costs to get X to the workers;
- ``kfold``: ``KFold(3)``: each fit works on a copy of 2/3 of X plus 1/3 for the test
  fold (scikit-learn's ``_safe_split`` indexes, so copies, the rows of each fold), so
  each busy worker adds about one X of fold copies, whoever ships the data;
- ``subsample-memmap``, ``kfold-memmap``: the same, X saved to a ``.npy`` file (in
  ``--dir``, default the temporary folder) and given as ``np.load(path, mmap_mode="r")``,
  read once before the baseline (as an in-memory X is in it): local workers map the same
  file (joblib passes its memmaps by file name too), so nothing is copied to ship it.

Runs alternate between contenders; medians over ``--repeat`` runs are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

N_FEATURES = 100


# ---------------------------------------------------------------------------- child


def tree_memory() -> tuple[int, int]:
    """(PSS, RSS) in bytes of this process and all its descendants."""
    import psutil

    me = psutil.Process()
    pss = rss = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.Error, OSError):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return pss, rss


def shmem() -> int:
    """The machine's shared memory (tmpfs and memory files), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Shmem:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler:
    """Peak tree memory above a baseline, sampled on a thread every ``period`` s."""

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.base = tree_memory()
        self.base_shmem = shmem()
        self.peak = [0, 0, 0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            pss, rss = tree_memory()
            self.peak[0] = max(self.peak[0], pss - self.base[0])
            self.peak[1] = max(self.peak[1], rss - self.base[1])
            self.peak[2] = max(self.peak[2], shmem() - self.base_shmem)
            if self._stop.wait(self.period):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_data(mb: float) -> tuple[object, object]:
    import numpy as np

    rows = int(mb * 1e6 / (8 * N_FEATURES))
    rng = np.random.default_rng(0)
    X = rng.random((rows, N_FEATURES))
    y = X[:, :10].sum(axis=1) + rng.random(rows)
    return X, y


def make_cv(case: str) -> object:
    from sklearn.model_selection import KFold, ShuffleSplit

    if case.startswith("subsample"):
        return ShuffleSplit(n_splits=4, train_size=0.05, test_size=0.05, random_state=0)
    return KFold(3)


def child(contender: str, case: str, mb: float, folder: str | None = None) -> dict[str, object]:
    import gc
    import tempfile

    import numpy as np

    X, y = make_data(mb)
    small_X, small_y = X[:200].copy(), y[:200].copy()
    if not case.endswith("-memmap"):
        return measure(contender, case, X, y, small_X, small_y)
    with tempfile.TemporaryDirectory(dir=folder, prefix="bench-memory-") as tmp:
        path = os.path.join(tmp, "X.npy")
        np.save(path, X)
        del X
        gc.collect()
        X = np.load(path, mmap_mode="r")
        float(np.asarray(X).sum())  # its pages mapped here before the baseline, as an array's are
        try:
            return measure(contender, case, X, y, small_X, small_y)
        finally:
            del X


def measure(contender: str, case: str, X: Any, y: Any, small_X: Any, small_y: Any) -> dict[str, object]:
    import gc

    import numpy as np
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV

    from hpsearch import LocalProcesses, run_search

    space = {"alpha": [0.1, 1.0]}
    cv = make_cv(case)
    pool = None
    if contender == "threads":
        def search(data, target):  # type: ignore[no-untyped-def]
            return run_search(Ridge(), space, data, target, cv=cv, workers=2, refit=False,
                              progress=False).cv_results_
    elif contender == "loky":
        def search(data, target):  # type: ignore[no-untyped-def]
            return GridSearchCV(Ridge(), space, cv=cv, n_jobs=2, refit=False).fit(data, target).cv_results_
    else:
        pool = LocalProcesses(2, shared_memory=contender == "hpsearch-shared").open()

        def search(data, target):  # type: ignore[no-untyped-def]
            return run_search(Ridge(), space, data, target, cv=cv, workers=pool, refit=False,
                              progress=False).cv_results_
    try:
        search(small_X, small_y)  # warm: workers started, their imports done
        gc.collect()
        time.sleep(0.5)
        with Sampler() as sampler:
            start = time.perf_counter()
            results = search(X, y)
            seconds = time.perf_counter() - start
            time.sleep(0.1)  # one more sample after the search
    finally:
        if pool is not None:
            pool.close()
    return {"contender": contender, "case": case, "data_bytes": int(X.nbytes), "seconds": seconds,
            "peak_pss": sampler.peak[0], "peak_rss": sampler.peak[1], "peak_shmem": sampler.peak[2],
            "scores": [float(s) for s in np.asarray(results["mean_test_score"])]}


# --------------------------------------------------------------------------- driver


def run_one(contender: str, case: str, mb: float, folder: str | None) -> dict[str, object]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    extra = ["--dir", folder] if folder else []
    out = subprocess.run([sys.executable, __file__, "--child", contender, "--case", case, "--mb", str(mb), *extra],
                         env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{contender} / {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=500.0, help="size of X in MB (default 500)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="subsample,kfold",
                        help="of subsample, kfold, subsample-memmap, kfold-memmap")
    parser.add_argument("--dir", help="where the memmap cases write X (default: the temporary folder)")
    parser.add_argument("--contenders", default="hpsearch-shared,hpsearch-copies,loky")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.case, args.mb, args.dir)), flush=True)
        return

    contenders = args.contenders.split(",")
    print(f"X: {args.mb:g} MB float64, 2 worker processes; load average {os.getloadavg()[0]:.2f} at start")
    for case in args.cases.split(","):
        runs: dict[str, list[dict[str, object]]] = {c: [] for c in contenders}
        for repeat in range(args.repeat):
            order = contenders if repeat % 2 == 0 else contenders[::-1]
            for contender in order:
                result = run_one(contender, case, args.mb, args.dir)
                runs[contender].append(result)
                data = result["data_bytes"]
                print(f"  {case:9s} {contender:16s} run {repeat + 1}: +{result['peak_pss'] / 1e6:7.0f} MB PSS "
                      f"({result['peak_pss'] / data:.2f}x X), +{result['peak_rss'] / 1e6:7.0f} MB RSS, "
                      f"Shmem +{result['peak_shmem'] / 1e6:5.0f} MB, {result['seconds']:.1f} s", flush=True)
        print(f"\n{case}: medians of {args.repeat} (peak above start / size of X); "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"  {'contender':16s} {'PSS ratio':>9s} {'PSS MB':>8s} {'RSS MB':>8s} {'Shmem MB':>9s} {'time s':>7s}")
        reference = runs[contenders[0]][0]["scores"]
        for contender in contenders:
            rs = runs[contender]
            data = rs[0]["data_bytes"]
            pss = statistics.median(r["peak_pss"] for r in rs)
            rss = statistics.median(r["peak_rss"] for r in rs)
            shm = statistics.median(r["peak_shmem"] for r in rs)
            sec = statistics.median(r["seconds"] for r in rs)
            same = all(r["scores"] == reference for r in rs)
            print(f"  {contender:16s} {pss / data:9.2f} {pss / 1e6:8.0f} {rss / 1e6:8.0f} {shm / 1e6:9.0f} "
                  f"{sec:7.1f}{'' if same else '  (scores differ!)'}")
        print()


if __name__ == "__main__":
    main()
