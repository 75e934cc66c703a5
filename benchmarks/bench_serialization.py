"""Benchmark hpsearch.serialization against in-band pickle, cloudpickle and memcpy.

For each payload it times a full round trip, ``loads(dumps(x))``:

- ``hpsearch``: in-process, straight from ``dumps`` (the codec's own cost);
- ``hps recv``: ``loads`` of the same frames first copied into separate
  ``bytearray`` objects, as they come off a socket (the copy is not timed;
  a buffer split over several frames costs one join copy here);
- ``pickle4``: ``pickle.loads(pickle.dumps(x, protocol=4))``, all in-band;
- ``cloudpickle``: ``pickle.loads(cloudpickle.dumps(x))``, protocol 5 in-band;
- ``np.copy``: one copy of the same number of bytes, the memory-bandwidth limit.

Also timed: ``content_id`` (BLAKE3 over every byte, once per context).

Run::

    python benchmarks/bench_serialization.py            # 1 MiB, 64 MiB, 1 GiB, sparse
    python benchmarks/bench_serialization.py --quick    # without the 1 GiB case

Times are per call, the best of ``--repeat`` measurements (fewer for the
1 GiB case); ratios
above 1 mean hpsearch is faster.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import platform
import sys
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import scipy.sparse as sparse

try:
    from hpsearch.serialization import content_id, dumps, loads
except ImportError:  # run from a checkout without installing hpsearch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hpsearch.serialization import content_id, dumps, loads

MiB = 1024 * 1024


def best_time(function: Callable[[], Any], repeat: int) -> float:
    """Best time per call over ``repeat`` measurements (timeit-style).

    Fast calls are looped so that one measurement lasts at least ~50 ms;
    slow ones (the 1 GiB cases) run once per measurement.
    """
    timer = timeit.Timer(function)
    gc.collect()
    first = timer.timeit(number=1)
    number = 1 if first >= 0.05 else max(1, int(0.05 / max(first, 1e-7)))
    return min(timer.repeat(repeat=repeat, number=number)) / number


def nbytes_of(obj: Any) -> int:
    if sparse.issparse(obj):
        return obj.data.nbytes + obj.indices.nbytes + obj.indptr.nbytes
    return obj.nbytes


def make_payloads(quick: bool) -> Iterator[tuple[str, Any]]:
    """One payload at a time, so that only one large array is alive."""
    rng = np.random.default_rng(0)
    yield "1 MiB float64", rng.random(MiB // 8)
    yield "64 MiB float64", rng.random(64 * MiB // 8)
    if not quick:
        big = np.empty(1024 * MiB // 8)
        big[:] = 1.0  # touch every page; random() on 1 GiB only adds setup time
        big[:: 1 << 12] = rng.random(big[:: 1 << 12].size)
        yield "1 GiB float64", big
        del big
    yield "CSR " + "x".join(map(str, SPARSE_SHAPE)) + f" nnz={SPARSE_SHAPE[0] * 10}", make_csr(rng)


SPARSE_SHAPE = (200_000, 5_000)


def make_csr(rng: np.random.Generator, per_row: int = 10) -> sparse.csr_matrix:
    """A CSR matrix with ``per_row`` distinct sorted columns per row.

    Built from its arrays: ``scipy.sparse.random`` takes minutes at this size.
    """
    n_rows, n_cols = SPARSE_SHAPE
    width = n_cols // per_row
    columns = np.arange(per_row) * width + rng.integers(0, width, size=(n_rows, per_row))
    indptr = np.arange(0, n_rows * per_row + 1, per_row, dtype=np.int32)
    data = rng.random(n_rows * per_row)
    return sparse.csr_matrix((data, columns.astype(np.int32).ravel(), indptr), shape=SPARSE_SHAPE)


def bench(name: str, obj: Any, repeat: int) -> dict[str, float]:
    size = nbytes_of(obj)
    repeat = max(2, repeat // 3) if size >= 512 * MiB else repeat
    frames = dumps(obj)
    received = [bytearray(frame) for frame in frames]
    if sparse.issparse(obj):
        flat = np.concatenate([a.view(np.uint8) for a in (obj.data, obj.indices, obj.indptr)])
    else:
        flat = obj.reshape(-1).view(np.uint8)

    check = loads(frames)
    assert (check != obj).nnz == 0 if sparse.issparse(obj) else np.array_equal(check, obj)
    del check

    row = {
        "name": name,
        "MiB": size / MiB,
        "frames": len(frames),
        "hpsearch": best_time(lambda: loads(dumps(obj)), repeat),
        "hps recv": best_time(lambda: loads(received), repeat),
        "pickle4": best_time(lambda: pickle.loads(pickle.dumps(obj, protocol=4)), repeat),
        "cloudpickle": best_time(lambda: pickle.loads(cloudpickle.dumps(obj)), repeat),
        "np.copy": best_time(lambda: flat.copy(), repeat),
        "content_id": best_time(lambda: content_id(frames), repeat),
    }
    del frames, received
    gc.collect()
    return row


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:7.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:7.1f} ms"
    return f"{seconds:7.2f} s "


def print_table(rows: list[dict[str, float]]) -> None:
    timed = ["hpsearch", "hps recv", "pickle4", "cloudpickle", "np.copy", "content_id"]
    print(f"{'payload':34} {'frames':>6} " + " ".join(f"{k:>10}" for k in timed))
    for row in rows:
        print(f"{row['name']:34} {row['frames']:>6} " + " ".join(f"{format_seconds(row[k]):>10}" for k in timed))
    print()
    print("ratios (>1: hpsearch round trip faster; np.copy/x: fraction of one memcpy)")
    header = ["pickle4/hps", "cloudpk/hps", "pickle4/recv", "np.copy/recv", "content_id GB/s"]
    print(f"{'payload':34} " + " ".join(f"{k:>15}" for k in header))
    for row in rows:
        values = [
            row["pickle4"] / row["hpsearch"],
            row["cloudpickle"] / row["hpsearch"],
            row["pickle4"] / row["hps recv"],
            row["np.copy"] / row["hps recv"],
            row["MiB"] * MiB / row["content_id"] / 1e9,
        ]
        print(f"{row['name']:34} " + " ".join(f"{v:>15.1f}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1 GiB array")
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement (best kept)")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"cloudpickle {cloudpickle.__version__}, {platform.machine()}")  # fmt: skip
    rows = []
    for name, obj in make_payloads(args.quick):
        rows.append(bench(name, obj, args.repeat))
        del obj
        gc.collect()
    print_table(rows)


if __name__ == "__main__":
    main()
