"""MLPClassifier / MLPRegressor behaviour: targets, sparse input, pickling, determinism."""

import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import cloudpickle  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification, make_multilabel_classification, make_regression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from hpsearch.estimators import MLPClassifier, MLPRegressor  # noqa: E402
from hpsearch.estimators import _mlp  # noqa: E402

pytestmark = pytest.mark.tensorflow

SMALL = dict(hidden_units=(16,), n_epochs=15, learning_rate=0.01, random_state=0)


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(n_samples=120, n_features=8, n_informative=5, n_classes=3, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def fitted(multiclass):
    X, y = multiclass
    return MLPClassifier(**SMALL, dropout=0.2).fit(X, y)


# -- targets -----------------------------------------------------------------------------


def test_multiclass_proba_and_attributes(multiclass, fitted):
    X, y = multiclass
    proba = fitted.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.classes_, [0, 1, 2])
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X)), proba)
    assert fitted.n_features_in_ == 8
    assert fitted.n_iter_ == len(fitted.loss_curve_) == 15
    assert fitted.loss_curve_[-1] < fitted.loss_curve_[0]
    assert fitted.score(X, y) > 0.7


def test_string_labels_round_trip():
    X, y = make_classification(n_samples=100, n_features=6, n_classes=3, n_informative=4, random_state=1)
    names = np.array(["neg", "neutral", "pos"])[y]
    clf = MLPClassifier(**SMALL).fit(X, names)
    np.testing.assert_array_equal(clf.classes_, ["neg", "neutral", "pos"])
    pred = clf.predict(X)
    assert pred.dtype.kind == "U" and set(pred) <= set(names)
    assert clf.score(X, names) > 0.6

    binary = np.where(y == 0, "spam", "ham")
    clf = MLPClassifier(**SMALL).fit(X, binary)
    np.testing.assert_array_equal(clf.classes_, ["ham", "spam"])
    proba = clf.predict_proba(X)
    assert proba.shape == (100, 2)  # one sigmoid output, two columns as in scikit-learn
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(proba[:, 1] > 0.5).astype(int)])
    assert clf.model_.outputs[0].shape[-1] == 1


def test_multilabel():
    X, Y = make_multilabel_classification(n_samples=120, n_features=10, n_classes=4, random_state=0)
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(**dict(SMALL, n_epochs=40)).fit(X, Y)
    np.testing.assert_array_equal(clf.classes_, np.arange(4))
    pred = clf.predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    proba = clf.predict_proba(X)
    assert proba.shape == Y.shape and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert (pred == Y).mean() > 0.7  # label-wise accuracy


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier(**SMALL).fit(np.ones((5, 2)), ["a"] * 5)


def test_regressor_single_and_multi_output():
    X, y = make_regression(n_samples=100, n_features=5, n_targets=2, noise=0.1, random_state=0)
    y = y / y.std(axis=0)
    reg = MLPRegressor(**dict(SMALL, n_epochs=40)).fit(X, y)
    assert reg.predict(X).shape == (100, 2) and reg.n_outputs_ == 2
    assert reg.score(X, y) > 0.5
    reg = MLPRegressor(**dict(SMALL, n_epochs=40, solver="sgd")).fit(X, y[:, 0])
    assert reg.predict(X).shape == (100,)
    assert reg.score(X, y[:, 0]) > 0.5


@pytest.mark.parametrize(
    "param, value, message",
    [("solver", "lbfgs", "solver must be one of"), ("dropout", 1.0, "dropout"),
     ("hidden_units", (8, 0), "hidden_units"), ("n_epochs", 0, "n_epochs")],
)
def test_bad_parameters_are_reported_at_fit(multiclass, param, value, message):
    X, y = multiclass
    clf = MLPClassifier(**{**SMALL, param: value})  # __init__ only stores
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_early_stopping_stops_and_keeps_the_best_weights(multiclass):
    X, y = multiclass
    clf = MLPClassifier(hidden_units=(32,), n_epochs=300, learning_rate=0.05, early_stopping=True,
                        validation_fraction=0.25, n_iter_no_change=3, tol=0.0, random_state=0).fit(X, y)
    assert clf.n_iter_ < 300
    assert len(clf.validation_loss_curve_) == clf.n_iter_
    assert clf.best_validation_loss_ == min(clf.validation_loss_curve_)
    # the kept weights are those of the best epoch, not the last one
    assert clf.validation_loss_curve_.index(clf.best_validation_loss_) == clf.n_iter_ - 1 - 3


# -- sparse input ------------------------------------------------------------------------


def test_sparse_input_stays_sparse(multiclass, monkeypatch):
    X, y = multiclass
    X = np.where(np.abs(X) > 1, X, 0.0)
    X_csr = sp.csr_matrix(X)
    seen = []
    to_tensor = _mlp._to_tensor
    monkeypatch.setattr(_mlp, "_to_tensor", lambda tf, batch: seen.append(to_tensor(tf, batch)) or seen[-1])

    def refuse(*args, **kwargs):
        raise AssertionError("the sparse matrix was densified")

    for cls in (sp.csr_matrix, sp.csr_array):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)
    clf = MLPClassifier(**SMALL).fit(X_csr, y)
    sparse_proba = clf.predict_proba(X_csr)
    monkeypatch.undo()

    import tensorflow as tf

    assert clf.model_.inputs[0].sparse
    assert seen and all(isinstance(batch, tf.SparseTensor) for batch in seen)
    dense = MLPClassifier(**SMALL).fit(X, y)
    assert not dense.model_.inputs[0].sparse
    # same seeds, same batches: only float rounding differs between the two kernels
    np.testing.assert_allclose(sparse_proba, dense.predict_proba(X), atol=1e-3)
    np.testing.assert_allclose(clf.predict_proba(sp.csc_matrix(X)), sparse_proba)


# -- pickling ----------------------------------------------------------------------------


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)])
def test_unfitted_pickles(dumps, loads):
    clf = MLPClassifier(hidden_units=(8, 4), dropout=0.1, solver="sgd", random_state=3)
    restored = loads(dumps(clf))
    assert restored.get_params() == clf.get_params()
    assert not hasattr(restored, "classes_")


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_fitted_pickle_predicts_the_same(multiclass, fitted, dumps):
    X, _ = multiclass
    data = dumps(fitted)
    restored = pickle.loads(data)
    assert restored.__dict__["_model"] is None  # rebuilt lazily, from weights
    np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(restored.predict(X), fitted.predict(X))
    assert fitted.__dict__["_model"] is not None  # pickling did not strip the original
    # pickled again after being restored (a worker sending it back)
    again = pickle.loads(dumps(restored))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))


def test_fitted_pickle_predicts_the_same_in_a_worker_like_process(tmp_path, multiclass, fitted):
    """What a remote worker does: configure TensorFlow first, then unpickle and predict."""
    X, _ = multiclass
    (tmp_path / "model.pkl").write_bytes(cloudpickle.dumps(fitted))
    np.save(tmp_path / "X.npy", X)
    code = """
import os, pickle, sys
import numpy as np
from hpsearch.estimators import TensorFlowConfigError, configure_tensorflow
applied = configure_tensorflow(gpu="", intra_op_threads=1, inter_op_threads=1)
assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and applied["gpus"] == [], applied
assert applied["intra_op_threads"] == 1 and applied["inter_op_threads"] == 1, applied
try:
    configure_tensorflow(gpu="0")
except TensorFlowConfigError as exc:
    assert "already imported" in str(exc)
else:
    raise AssertionError("pinning a GPU after TensorFlow is imported must fail")
d = sys.argv[1]
model = pickle.load(open(d + "/model.pkl", "rb"))
np.save(d + "/proba.npy", model.predict_proba(np.load(d + "/X.npy")))
"""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=180, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"), fitted.predict_proba(X))


def test_pickled_state_holds_no_tensorflow_objects(fitted):
    state = fitted.__getstate__()
    assert state["_model"] is None and "_model_lock" not in state
    assert all(isinstance(w, np.ndarray) for w in state["_model_weights"])
    for value in state.values():
        assert "tensorflow" not in type(value).__module__ and "keras" not in type(value).__module__


# -- reproducibility ---------------------------------------------------------------------


def test_same_random_state_same_model(multiclass):
    X, y = multiclass
    params = dict(SMALL, dropout=0.3, early_stopping=True, random_state=7)
    a = MLPClassifier(**params).fit(X, y)
    b = clone(MLPClassifier(**params)).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = MLPClassifier(**dict(params, random_state=8)).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_two_fits_in_parallel_threads_match_a_sequential_fit(multiclass, sparse):
    X, y = multiclass
    if sparse:
        X = sp.csr_matrix(np.where(np.abs(X) > 1, X, 0.0))
    params = dict(SMALL, hidden_units=(16, 8), dropout=0.2, random_state=11)
    expected = MLPClassifier(**params).fit(X, y).predict_proba(X)

    barrier = threading.Barrier(2)
    results, errors = [None, None], []

    def fit(i):
        try:
            barrier.wait()
            results[i] = MLPClassifier(**params).fit(X, y).predict_proba(X)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=fit, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    np.testing.assert_array_equal(results[0], expected)
    np.testing.assert_array_equal(results[1], expected)


def test_global_tensorflow_seed_is_neither_used_nor_changed(multiclass):
    import tensorflow as tf

    X, y = multiclass
    tf.random.set_seed(1)
    a = MLPClassifier(**SMALL, dropout=0.2).fit(X, y).predict_proba(X)
    after_fit = tf.random.uniform([3]).numpy()
    tf.random.set_seed(1)
    expected_draw = tf.random.uniform([3]).numpy()
    tf.random.set_seed(2)
    b = MLPClassifier(**SMALL, dropout=0.2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(after_fit, expected_draw)
