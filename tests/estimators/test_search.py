"""End-to-end searches of TensorFlow models with run_search."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from hpsearch import LocalProcesses, run_search  # noqa: E402

from .reviews import SPACE, make_pipeline, make_reviews  # noqa: E402

pytestmark = pytest.mark.tensorflow

# Worker set-ups that must give the reference scores (those of one thread). Each value
# builds the ``workers`` argument of run_search; add e.g. LocalProcesses(2) here.
WORKERS = {
    "threads-2": lambda: 2,
    "processes-2": lambda: LocalProcesses(2),
}


def search(workers):
    texts, labels = make_reviews()
    return run_search(make_pipeline(), SPACE, texts, labels, cv=3, workers=workers, progress=False)


@pytest.fixture(scope="module")
def reference():
    """The search on one thread."""
    return search(workers=1)


def test_text_search_on_one_thread(reference):
    scores = reference.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.isfinite(scores).all()
    assert reference.best_score_ > 0.75  # chance is 0.5
    assert reference.best_params_ in [
        {"clf__dropout": d, "clf__hidden_units": h} for h in SPACE["clf__hidden_units"] for d in SPACE["clf__dropout"]
    ]
    texts, labels = make_reviews(40, seed=1)
    assert reference.best_estimator_.score(texts, labels) > 0.7


@pytest.mark.parametrize("make_workers", list(WORKERS.values()), ids=list(WORKERS))
def test_text_search_scores_do_not_depend_on_the_workers(reference, make_workers):
    result = search(make_workers())
    for key in ("mean_test_score", "std_test_score", "split0_test_score", "split1_test_score",
                "split2_test_score"):
        np.testing.assert_array_equal(result.cv_results_[key], reference.cv_results_[key], err_msg=key)
    assert result.cv_results_["params"] == reference.cv_results_["params"]
    assert result.best_params_ == reference.best_params_


def test_keras_sklearn_wrapper_can_be_searched():
    """A user's own Keras model through keras.wrappers.SKLearnClassifier."""
    import keras

    def build(X, y, units=8):
        inputs = keras.Input(shape=(X.shape[1],))
        hidden = keras.layers.Dense(units, activation="relu")(inputs)
        outputs = keras.layers.Dense(y.shape[1], activation="softmax")(hidden)  # y arrives one-hot
        model = keras.Model(inputs, outputs)
        model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(0.05))
        return model

    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 4))
    y = np.where(X[:, 0] + X[:, 1] > 0, "up", "down")
    grid = [{"units": 4}, {"units": 16}]
    # SKLearnClassifier.__sklearn_clone__ drops fit_kwargs, so fit options go through fit_params
    result = run_search(keras.wrappers.SKLearnClassifier(model=build), {"model_kwargs": grid}, X, y, cv=2,
                        fit_params={"epochs": 5, "verbose": 0}, workers=2, progress=False)
    scores = result.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and scores.max() > 0.6
    assert result.best_params_["model_kwargs"] in grid
    assert set(result.best_estimator_.predict(X[:5])) <= {"up", "down"}
