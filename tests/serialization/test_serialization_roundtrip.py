"""Round trips through dumps/loads for every kind of object a search ships."""

from __future__ import annotations

import functools
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hpsearch.serialization import (
    OUT_OF_BAND_THRESHOLD,
    SerializationError,
    codec,
    dumps,
    loads,
)

NUMERIC_DTYPES = [
    np.bool_, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.longdouble,
    np.complex64, np.complex128, np.clongdouble,
    np.dtype(">f8"), np.dtype(">i4"), np.dtype("datetime64[ns]"), np.dtype("timedelta64[s]"),
]  # fmt: skip


def header_of(frames):
    import msgpack

    return msgpack.unpackb(frames[0], raw=False)


def roundtrip(obj, **kwargs):
    frames = dumps(obj)
    return loads(frames, **kwargs), frames


def assert_same_array(restored, original):
    assert type(restored) is type(original)
    assert restored.dtype == original.dtype
    assert restored.shape == original.shape
    assert restored.flags.f_contiguous == original.flags.f_contiguous or not (
        original.flags.c_contiguous or original.flags.f_contiguous
    )
    np.testing.assert_array_equal(restored, original)


def make_array(dtype, n_elements, rng):
    values = rng.integers(0, 100, size=n_elements)
    return values.astype(dtype)


# --------------------------------------------------------------------------- numpy


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=str)
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_numeric_dtypes_orders_and_sizes(dtype, size, order):
    rng = np.random.default_rng(0)
    itemsize = np.dtype(dtype).itemsize
    n_rows = 10 if size == "small" else 2 * OUT_OF_BAND_THRESHOLD // (itemsize * 7) + 1
    original = np.asarray(make_array(dtype, n_rows * 7, rng).reshape(n_rows, 7), order=order)

    restored, frames = roundtrip(original)

    assert_same_array(restored, original)
    n_out_of_band = len(header_of(frames)["buffers"])
    # numpy pickles datetime/timedelta arrays in-band (their dtype carries
    # metadata), so only plain numeric kinds go out-of-band.
    out_of_band = size == "large" and np.dtype(dtype).kind in "biufc"
    assert n_out_of_band == int(out_of_band)


@pytest.mark.parametrize(
    "make_view",
    [
        lambda a: a[::3],
        lambda a: a[:, 1::2],
        lambda a: a.T[::2],
        lambda a: a[::-1, ::-1],
        lambda a: np.lib.stride_tricks.as_strided(a, shape=(50, 50), strides=(8, 0)),
    ],
    ids=["rows-step", "cols-step", "transposed-step", "reversed", "zero-stride"],
)
def test_non_contiguous_views(make_view):
    base = np.arange(300 * 400, dtype=np.float64).reshape(300, 400)
    view = make_view(base)
    assert not (view.flags.c_contiguous and view.flags.f_contiguous)

    restored, _ = roundtrip(view)

    np.testing.assert_array_equal(restored, view)
    assert restored.dtype == view.dtype


@pytest.mark.parametrize(
    "original",
    [
        np.array(3.5),
        np.array(7, dtype=np.uint16),
        np.empty((0,)),
        np.empty((0, 5), dtype=np.int32),
        np.empty((4, 0, 3), dtype=np.complex64, order="F"),
    ],
    ids=["0d-float", "0d-uint16", "empty-1d", "empty-2d", "empty-3d-F"],
)
def test_zero_dimensional_and_empty_arrays(original):
    restored, frames = roundtrip(original)

    assert_same_array(restored, original)
    assert len(frames) == 2  # nothing to send out-of-band


def test_object_and_structured_arrays():
    objects = np.array([{"a": 1}, "text", None, 3.5, (1, 2)] * 20_000, dtype=object)
    structured = np.zeros(20_000, dtype=[("x", "f8"), ("n", "i4"), ("tag", "U3")])
    structured["x"] = np.arange(20_000)
    structured["tag"] = "abc"

    restored, frames = roundtrip({"objects": objects, "structured": structured})

    assert restored["objects"].dtype == object
    assert list(restored["objects"][:5]) == list(objects[:5])
    assert len(restored["objects"]) == len(objects)
    # Object arrays cannot travel out-of-band: only the structured array did.
    assert [b["nbytes"] for b in header_of(frames)["buffers"]] == [structured.nbytes]
    np.testing.assert_array_equal(restored["structured"], structured)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    original=hnp.arrays(
        dtype=st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                        hnp.floating_dtypes(), hnp.complex_number_dtypes(), hnp.boolean_dtypes()),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    ),
    order=st.sampled_from(["C", "F"]),
    step=st.integers(1, 3),
    writeable=st.booleans(),
)  # fmt: skip
def test_hypothesis_arrays_through_every_path(original, order, step, writeable):
    # Tiny thresholds push these small arrays through the out-of-band and the
    # split-frame paths that real data reaches only at 64 KiB and 64 MiB.
    original = np.asarray(original, order=order)
    if original.ndim:
        original = original[::step]
    for threshold, max_frame in [(10**9, codec.MAX_FRAME_BYTES), (1, 7), (1, 1)]:
        with mock.patch.object(codec, "OUT_OF_BAND_THRESHOLD", threshold), mock.patch.object(
            codec, "MAX_FRAME_BYTES", max_frame
        ):
            frames = dumps(original)
        received = [bytes(frame) for frame in frames]  # separate allocations
        for candidate in (frames, received):
            restored = loads(candidate, writeable=writeable)
            # numpy itself (plain pickle too) turns non-contiguous big-endian
            # arrays into native byte order; values are unchanged.
            assert restored.dtype.newbyteorder("=") == original.dtype.newbyteorder("=")
            assert restored.shape == original.shape
            np.testing.assert_array_equal(restored, original)


# --------------------------------------------------------------------- scipy.sparse


SPARSE_FORMATS = ["csr", "csc", "coo", "bsr", "lil", "dia", "dok"]


@pytest.mark.parametrize("fmt", SPARSE_FORMATS)
@pytest.mark.parametrize("kind", ["matrix", "array"])
def test_scipy_sparse(fmt, kind):
    if fmt == "dia":  # a banded matrix: random ones make DIA inefficient
        original = sparse.diags([1.0, -2.0, 3.0], [-1, 0, 2], shape=(200, 150), format="dia")
    else:
        random = sparse.random(200, 150, density=0.1, format="csr", random_state=0)
        original = random.asformat(fmt)
    if kind == "array":
        original = getattr(sparse, f"{fmt}_array")(original)

    restored, _ = roundtrip(original)

    assert type(restored) is type(original)
    assert restored.format == original.format
    assert restored.dtype == original.dtype
    np.testing.assert_array_equal(restored.toarray(), original.toarray())


def test_large_sparse_matrix_buffers_are_out_of_band():
    original = sparse.random(5_000, 1_000, density=0.02, format="csr", random_state=1)

    restored, frames = roundtrip(original)

    sizes = sorted(b["nbytes"] for b in header_of(frames)["buffers"])
    arrays = (original.data, original.indices, original.indptr)
    assert sizes == sorted(a.nbytes for a in arrays if a.nbytes >= OUT_OF_BAND_THRESHOLD)
    assert len(sizes) == 2  # indptr (20 KB) stays in-band
    assert np.shares_memory(restored.data, original.data)  # same process, no copy
    assert (restored != original).nnz == 0


# -------------------------------------------------------------------------- pandas


def test_pandas_dataframe_and_series():
    pd = pytest.importorskip("pandas")
    n = 50_000
    frame = pd.DataFrame(
        {
            "float": np.linspace(0, 1, n),
            "int": np.arange(n),
            "bool": np.arange(n) % 2 == 0,
            "text": [f"row{i % 17}" for i in range(n)],
            "category": pd.Categorical(["a", "b", "c", "a", "b"] * (n // 5)),
            "when": pd.date_range("2020-01-01", periods=n, freq="min"),
        },
        index=pd.RangeIndex(10, 10 + n, name="id"),
    )
    series = pd.Series(np.arange(n, dtype=np.float32), name="target")

    restored, frames = roundtrip({"X": frame, "y": series})

    pd.testing.assert_frame_equal(restored["X"], frame)
    pd.testing.assert_series_equal(restored["y"], series)
    assert header_of(frames)["buffers"], "numeric columns should travel out-of-band"


# -------------------------------------------------------------------- scikit-learn


def test_fitted_estimators_and_pipelines():
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    pipeline = Pipeline(
        [
            ("scale", ColumnTransformer([("s", StandardScaler(), [0, 1, 2])], remainder="passthrough")),
            ("clf", LogisticRegression(C=0.5)),
        ]
    ).fit(X, y)
    template = SVC(C=3.0, gamma="scale")

    restored, _ = roundtrip({"fitted": pipeline, "template": template})

    np.testing.assert_array_equal(restored["fitted"].predict_proba(X), pipeline.predict_proba(X))
    assert restored["template"].get_params() == template.get_params()


def test_evaluation_context_round_trip_gives_the_same_scores():
    from sklearn.datasets import make_classification
    from sklearn.metrics import get_scorer, make_scorer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    from hpsearch.evaluation import EvaluationContext, evaluate

    X, y = make_classification(n_samples=2_000, n_features=20, random_state=0)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    context = EvaluationContext(
        estimator=SVC(),
        X=X,
        y=y,
        splits=splits,
        scorers={
            "accuracy": get_scorer("accuracy"),
            "custom": make_scorer(lambda yt, yp: float(np.mean(yt == yp)) - 0.5),
        },
        fit_params={"sample_weight": np.ones(len(y))},
    )

    restored, frames = roundtrip(context)

    assert header_of(frames)["pickler"] == "cloudpickle"  # the lambda in the scorer
    assert not restored.X.flags.writeable  # large data arrives read-only
    expected = evaluate(context, {"C": 2.0}, fold=1)
    actual = evaluate(restored, {"C": 2.0}, fold=1)
    assert actual.error is None
    assert actual.test_scores == expected.test_scores


# ---------------------------------------------------------------- functions, classes


def module_level_function(x):
    return x * 3


def test_functions_lambdas_closures_and_partials():
    offset = 10

    def closure(x):
        return x + offset

    functions = {
        "module": module_level_function,
        "lambda": lambda x: x**2,
        "closure": closure,
        "partial": functools.partial(module_level_function, 5),
        "builtin": len,
    }

    restored, frames = roundtrip(functions)

    assert header_of(frames)["pickler"] == "cloudpickle"
    assert restored["module"](2) == 6
    assert restored["lambda"](4) == 16
    assert restored["closure"](1) == 11
    assert restored["partial"]() == 15
    assert restored["builtin"]([1, 2]) == 2


def test_plain_pickle_is_used_when_it_suffices():
    _, frames = roundtrip({"f": module_level_function, "X": np.zeros(10)})

    assert header_of(frames)["pickler"] == "pickle"


def test_cloudpickle_retry_does_not_leak_buffers_of_the_failed_attempt():
    big = np.arange(100_000, dtype=np.float64)  # collected by plain pickle, then it fails
    obj = [big, lambda: None, big + 1]

    restored, frames = roundtrip(obj)

    assert header_of(frames)["pickler"] == "cloudpickle"
    assert len(header_of(frames)["buffers"]) == 2
    np.testing.assert_array_equal(restored[0], big)
    np.testing.assert_array_equal(restored[2], big + 1)


def test_code_defined_in_main_travels_by_value(foreign_process):
    # A script's classes and functions live in __main__, which the worker
    # process does not have: plain pickle "succeeds" by reference, so the
    # codec must detect it and send them by value with cloudpickle.
    frames = foreign_process["frames"]

    assert header_of(frames)["pickler"] == "cloudpickle"
    restored = loads(frames)
    assert restored["p"].norm() == 4
    assert restored["f"](21) == 42
    np.testing.assert_array_equal(restored["X"], np.arange(20_000.0))


# ----------------------------------------------------------------------- containers


def test_nested_containers_keep_structure_and_sharing():
    shared = np.arange(50_000, dtype=np.int64)
    original = {
        "list": [1, "two", 3.0, None, b"bytes", bytearray(b"ba")],
        "tuple": (shared, (shared[:10], {"deep": [np.float32(1.5), {1, 2, 3}]})),
        "again": shared,
        frozenset({"k"}): complex(1, 2),
    }

    restored, frames = roundtrip(original)

    assert restored["list"] == original["list"]
    assert restored["again"] is restored["tuple"][0]  # identity survives
    assert len(header_of(frames)["buffers"]) == 1  # and the buffer is sent once
    np.testing.assert_array_equal(restored["tuple"][0], shared)
    np.testing.assert_array_equal(restored["tuple"][1][0], shared[:10])
    assert restored["tuple"][1][1] == {"deep": [np.float32(1.5), {1, 2, 3}]}
    assert restored[frozenset({"k"})] == complex(1, 2)


def test_unpicklable_object_raises_serialization_error():
    import threading

    with pytest.raises(SerializationError, match="cannot serialize.*'dict'") as info:
        dumps({"lock": threading.Lock()})
    assert info.value.__cause__ is not None
