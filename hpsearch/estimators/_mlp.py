"""Multilayer perceptrons on TensorFlow/Keras behind the scikit-learn estimator API.

Design choices, and why:

- The Keras model is built inside ``fit`` (Keras 3 functional API) from the
  estimator's own parameters, so ``__init__`` only stores arguments and the model
  can be rebuilt anywhere from ``(parameters, n_features, n_outputs)`` plus weights.
- Training is a small loop of our own around one ``tf.function`` step rather than
  ``model.fit``: it lets us shuffle with the estimator's own ``RandomState`` and
  feed scipy.sparse batches as ``tf.SparseTensor`` without any global state.
  Initializers and dropout get explicit seeds drawn from ``random_state``;
  TensorFlow's global seed is never read or set, so two estimators with the same
  ``random_state`` fitted at the same time in two threads give the same model.
- Pickling stores the weights as numpy arrays, never live TensorFlow objects; the
  Keras model is rebuilt on first use after unpickling.
"""

from __future__ import annotations

import logging
import numbers
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._tf import import_tensorflow

logger = logging.getLogger(__name__)

__all__ = ["MLPClassifier", "MLPRegressor"]

_SOLVERS = ("adam", "sgd")
_PREDICT_BATCH = 4096
_MAX_SEED = 2**31 - 1


class _BaseMLP(BaseEstimator):
    """Shared fitting, prediction and pickling; subclasses define the targets."""

    def __init__(
        self,
        hidden_units: Sequence[int] = (100,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_size: int | str = "auto",
        n_epochs: int = 200,
        learning_rate: float = 1e-3,
        solver: str = "adam",
        momentum: float = 0.9,
        alpha: float = 1e-4,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.hidden_units = hidden_units
        self.activation = activation
        self.dropout = dropout
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.solver = solver
        self.momentum = momentum
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state

    # -- scikit-learn plumbing ---------------------------------------------------------

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -- subclass hooks ------------------------------------------------------------------

    def _encode_targets(self, y: Any) -> tuple[np.ndarray, str, int]:
        """Targets for training, the loss name and the number of outputs."""
        raise NotImplementedError

    def _stratify(self, targets: np.ndarray) -> np.ndarray | None:
        return None

    # -- fitting ---------------------------------------------------------------------

    def _check_params(self) -> None:
        units = self.hidden_units
        if isinstance(units, numbers.Integral):
            units = (int(units),)
        if not isinstance(units, (tuple, list)) or not all(
            isinstance(u, numbers.Integral) and not isinstance(u, bool) and int(u) > 0 for u in units
        ):
            raise ValueError(f"hidden_units must be a tuple of positive integers, got {self.hidden_units!r}")
        if not (isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral) and self.batch_size > 0)):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.n_epochs, numbers.Integral) and self.n_epochs > 0):
            raise ValueError(f"n_epochs must be a positive integer, got {self.n_epochs!r}")
        if not (isinstance(self.learning_rate, numbers.Real) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {list(_SOLVERS)}, got {self.solver!r}")
        if not (isinstance(self.alpha, numbers.Real) and self.alpha >= 0):
            raise ValueError(f"alpha must be a non-negative number, got {self.alpha!r}")
        if self.early_stopping and not (0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        if not (isinstance(self.n_iter_no_change, numbers.Integral) and self.n_iter_no_change > 0):
            raise ValueError(f"n_iter_no_change must be a positive integer, got {self.n_iter_no_change!r}")

    def fit(self, X: Any, y: Any) -> _BaseMLP:
        """Build the network and train it on ``(X, y)``.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Sparse input stays sparse: each batch goes to the first layer as a
            ``tf.SparseTensor``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self
        """
        self._check_params()
        X, y = validate_data(
            self, X, y, accept_sparse="csr", dtype=(np.float32, np.float64), multi_output=True
        )
        targets, loss_name, n_outputs = self._encode_targets(y)
        tf, keras = import_tensorflow()
        X = _canonical_sparse(X)
        rng = check_random_state(self.random_state)
        build_seed, shuffle_seed, split_seed = (int(s) for s in rng.randint(0, _MAX_SEED, size=3))

        if self.early_stopping:
            X_train, X_val, t_train, t_val = self._validation_split(X, targets, split_seed)
        else:
            X_train, t_train, X_val, t_val = X, targets, None, None

        self._loss_name = loss_name
        self._n_outputs = n_outputs
        self._sparse_input = sp.issparse(X)
        self._build_seed = build_seed
        model = self._build_model(keras)
        optimizer = self._make_optimizer(keras)
        optimizer.build(model.trainable_variables)
        train_step, eval_loss = _make_step_functions(tf, model, optimizer, loss_name, self.alpha, X.shape[1],
                                                     n_outputs, self._sparse_input)

        n_train = X_train.shape[0]
        batch_size = min(200, n_train) if self.batch_size == "auto" else min(int(self.batch_size), n_train)
        shuffle_rng = np.random.RandomState(shuffle_seed)
        loss_curve: list[float] = []
        validation_loss_curve: list[float] = []
        best_loss, best_weights, bad_epochs = np.inf, None, 0
        for epoch in range(self.n_epochs):
            order = shuffle_rng.permutation(n_train)
            total = 0.0
            for start in range(0, n_train, batch_size):
                idx = order[start:start + batch_size]
                batch_loss = train_step(_to_tensor(tf, X_train[idx]), t_train[idx])
                total += float(batch_loss) * len(idx)
            loss_curve.append(total / n_train)
            if X_val is not None:
                val_loss = _batched_loss(tf, eval_loss, X_val, t_val)
                validation_loss_curve.append(val_loss)
                if val_loss < best_loss - self.tol:
                    best_loss, best_weights, bad_epochs = val_loss, model.get_weights(), 0
                else:
                    bad_epochs += 1
                    if bad_epochs >= self.n_iter_no_change:
                        logger.debug("early stopping after %d epochs (best validation loss %.5g)",
                                     epoch + 1, best_loss)
                        break
        if best_weights is not None:  # as Keras EarlyStopping(restore_best_weights=True)
            model.set_weights(best_weights)
        self.loss_curve_ = loss_curve
        self.n_iter_ = len(loss_curve)
        self.validation_loss_curve_ = validation_loss_curve if X_val is not None else None
        self.best_validation_loss_ = float(best_loss) if X_val is not None else None
        self._model = model
        self._model_weights = None
        self._model_lock = threading.Lock()
        return self

    def _validation_split(self, X: Any, targets: np.ndarray, seed: int) -> tuple[Any, Any, Any, Any]:
        stratify = self._stratify(targets)
        try:
            return train_test_split(X, targets, test_size=self.validation_fraction, random_state=seed,
                                    stratify=stratify)
        except ValueError:
            if stratify is None:
                raise
            # too few samples of a class to stratify: split at random instead
            return train_test_split(X, targets, test_size=self.validation_fraction, random_state=seed)

    def _make_optimizer(self, keras: Any) -> Any:
        if self.solver == "adam":
            return keras.optimizers.Adam(learning_rate=self.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
        return keras.optimizers.SGD(learning_rate=self.learning_rate, momentum=self.momentum, nesterov=True)

    def _build_model(self, keras: Any) -> Any:
        """The Keras model: Dense(+Dropout) layers, a linear output (logits)."""
        units = (self.hidden_units,) if isinstance(self.hidden_units, numbers.Integral) else self.hidden_units
        seeds = np.random.RandomState(self._build_seed).randint(0, _MAX_SEED, size=2 * len(units) + 1)
        inputs = keras.Input(shape=(self.n_features_in_,), sparse=self._sparse_input, dtype="float32")
        x = inputs
        for i, n_units in enumerate(units):
            x = keras.layers.Dense(
                int(n_units),
                activation=self.activation,
                kernel_initializer=keras.initializers.GlorotUniform(seed=int(seeds[2 * i])),
            )(x)
            if self.dropout > 0:
                x = keras.layers.Dropout(float(self.dropout), seed=int(seeds[2 * i + 1]))(x)
        outputs = keras.layers.Dense(
            self._n_outputs, kernel_initializer=keras.initializers.GlorotUniform(seed=int(seeds[-1]))
        )(x)
        return keras.Model(inputs, outputs)

    # -- prediction -----------------------------------------------------------------------

    @property
    def model_(self) -> Any:
        """The fitted Keras model (rebuilt from the weights after unpickling)."""
        check_is_fitted(self)
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    _, keras = import_tensorflow()
                    model = self._build_model(keras)
                    model.set_weights(self._model_weights)
                    self._model = model
        return self._model

    def _logits(self, X: Any) -> np.ndarray:
        """Network outputs before the output activation, as float64.

        The forward pass runs in float64 on the fitted weights (numpy/scipy matrix
        products, the layers' own activation functions). Unlike a float32 pass through
        TensorFlow, a sample's prediction then does not depend on which other samples
        share its batch (scikit-learn's subset-invariance check, and users comparing
        ``predict(X[:10])`` with ``predict(X)[:10]``), and sparse X stays sparse.
        """
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=(np.float64, np.float32), reset=False)
        out = X.astype(np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        dense_layers = [layer for layer in self.model_.layers if hasattr(layer, "kernel")]
        for layer in dense_layers:
            kernel, bias = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
            out = np.asarray(out @ kernel) + bias
            if layer is not dense_layers[-1]:
                out = np.asarray(layer.activation(out), dtype=np.float64)
        return out

    # -- pickling --------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ returns the live __dict__
        if state.get("_model") is not None:  # weights as numpy arrays, never live TF objects
            state["_model_weights"] = state["_model"].get_weights()
        state["_model"] = None
        state.pop("_model_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_model_weights" in state:
            self._model_lock = threading.Lock()


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier on TensorFlow/Keras.

    Binary targets use one sigmoid output, multiclass targets a softmax, and
    multilabel indicator matrices one sigmoid per label; the loss is the matching
    cross-entropy plus an L2 penalty. TensorFlow is imported on the first ``fit``.

    Parameters
    ----------
    hidden_units : tuple of int, default=(100,)
        Units of each hidden layer; ``()`` is a linear model (logistic regression).
    activation : str, default="relu"
        Keras activation of the hidden layers ("relu", "tanh", "sigmoid", ...).
    dropout : float, default=0.0
        Dropout rate after each hidden layer, in [0, 1).
    batch_size : int or "auto", default="auto"
        Minibatch size; "auto" is ``min(200, n_samples)``.
    n_epochs : int, default=200
        Passes over the training data (fewer with ``early_stopping``).
    learning_rate : float, default=1e-3
    solver : {"adam", "sgd"}, default="adam"
        "sgd" is SGD with Nesterov momentum ``momentum``.
    momentum : float, default=0.9
        Momentum of "sgd".
    alpha : float, default=1e-4
        L2 penalty: ``alpha / 2 * sum(kernel ** 2) / batch_size`` is added to the
        loss of each batch, as in scikit-learn's MLPClassifier.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when
        the validation loss has not improved by ``tol`` for ``n_iter_no_change``
        epochs, and keep the weights of the best epoch.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    tol : float, default=1e-4
    random_state : int, RandomState or None, default=None
        Seeds the weights, dropout, shuffling and validation split. The same int gives
        the same model, also when several are fitted at once in threads; TensorFlow's
        global seed is neither used nor changed.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels; for multilabel targets ``arange(n_labels)``.
    n_features_in_ : int
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    validation_loss_curve_ : list of float or None
        Validation loss of each epoch (None without ``early_stopping``).
    best_validation_loss_ : float or None
    model_ : keras.Model
        The fitted network (its outputs are logits).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from hpsearch.estimators import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_units=(16,), n_epochs=50, learning_rate=0.01,
    ...                     random_state=0).fit(X, y)  # doctest: +SKIP
    >>> clf.predict_proba(X[:2]).shape  # doctest: +SKIP
    (2, 3)
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _encode_targets(self, y: Any) -> tuple[np.ndarray, str, int]:
        check_classification_targets(y)
        target_type = type_of_target(y)
        if target_type == "multilabel-indicator":
            y = np.asarray(y)
            self._multilabel = True
            self.classes_ = np.arange(y.shape[1])
            return y.astype(np.float32), "binary", y.shape[1]
        if target_type.endswith("-multioutput"):
            raise ValueError(
                f"MLPClassifier supports binary, multiclass and multilabel-indicator targets, "
                f"got {target_type!r} targets"
            )
        self._multilabel = False
        y = column_or_1d(y, warn=True)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"MLPClassifier needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {self.classes_[0]!r}"
            )
        codes = encoder.transform(y)
        if len(self.classes_) == 2:
            return codes.astype(np.float32).reshape(-1, 1), "binary", 1
        return codes.astype(np.int32), "multiclass", len(self.classes_)

    def _stratify(self, targets: np.ndarray) -> np.ndarray | None:
        return None if self._multilabel else targets

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            For multilabel targets, the probability of each label (columns do not sum
            to one).
        """
        from scipy.special import expit, softmax

        logits = self._logits(X)
        if self._loss_name == "multiclass":
            return softmax(logits, axis=1)
        proba = expit(logits)
        if self._multilabel:
            return proba
        return np.hstack([1.0 - proba, proba])

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        from scipy.special import log_expit, log_softmax

        logits = self._logits(X)
        if self._loss_name == "multiclass":
            return log_softmax(logits, axis=1)
        if self._multilabel:
            return log_expit(logits)
        return np.hstack([log_expit(-logits), log_expit(logits)])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels (an indicator matrix for multilabel targets)."""
        logits = self._logits(X)
        if self._multilabel:
            return (logits > 0).astype(int)
        if self._loss_name == "multiclass":
            return self.classes_[np.argmax(logits, axis=1)]
        return self.classes_[(logits[:, 0] > 0).astype(int)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor on TensorFlow/Keras.

    A linear output layer trained on half the squared error plus an L2 penalty;
    several outputs when ``y`` is 2-D. TensorFlow is imported on the first ``fit``.

    Parameters
    ----------
    hidden_units, activation, dropout, batch_size, n_epochs, learning_rate, solver, \
momentum, alpha, early_stopping, validation_fraction, n_iter_no_change, tol, random_state
        As in :class:`MLPClassifier` (the validation split is not stratified).

    Attributes
    ----------
    n_features_in_ : int
    n_outputs_ : int
    n_iter_ : int
    loss_curve_ : list of float
    validation_loss_curve_ : list of float or None
    best_validation_loss_ : float or None
    model_ : keras.Model

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from hpsearch.estimators import MLPRegressor
    >>> X, y = make_regression(n_samples=100, n_features=5, random_state=0)
    >>> reg = MLPRegressor(hidden_units=(32,), learning_rate=0.01, random_state=0).fit(X, y)  # doctest: +SKIP
    >>> reg.predict(X[:3]).shape  # doctest: +SKIP
    (3,)
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode_targets(self, y: Any) -> tuple[np.ndarray, str, int]:
        y = np.asarray(y, dtype=np.float64)
        self._y_ndim = y.ndim
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        self.n_outputs_ = targets.shape[1]
        return targets.astype(np.float32), "squared_error", targets.shape[1]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, of shape (n_samples,) when ``y`` was 1-D."""
        out = self._logits(X)
        return out[:, 0] if self._y_ndim == 1 else out


# -- helpers (TensorFlow is passed in, never imported at module level) -------------------


def _canonical_sparse(X: Any) -> Any:
    """A CSR matrix with sorted, summed indices (a copy only when needed)."""
    if sp.issparse(X) and not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def _to_tensor(tf: Any, X: Any) -> Any:
    """A batch for the network: a ``tf.SparseTensor`` for sparse input."""
    if sp.issparse(X):
        coo = X.tocoo()
        indices = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
        return tf.SparseTensor(indices, coo.data.astype(np.float32), dense_shape=np.array(X.shape, dtype=np.int64))
    return tf.convert_to_tensor(np.asarray(X, dtype=np.float32))


def _make_step_functions(tf: Any, model: Any, optimizer: Any, loss_name: str, alpha: float, n_features: int,
                         n_outputs: int, sparse: bool) -> tuple[Any, Any]:
    """One compiled training step, and a loss evaluation, for this model."""
    if loss_name == "multiclass":
        def data_loss(targets: Any, logits: Any) -> Any:
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))
        target_spec = tf.TensorSpec([None], tf.int32)
    elif loss_name == "binary":
        def data_loss(targets: Any, logits: Any) -> Any:
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))
        target_spec = tf.TensorSpec([None, n_outputs], tf.float32)
    else:
        def data_loss(targets: Any, logits: Any) -> Any:
            return 0.5 * tf.reduce_mean(tf.square(targets - logits))
        target_spec = tf.TensorSpec([None, n_outputs], tf.float32)
    if sparse:
        input_spec = tf.SparseTensorSpec([None, n_features], tf.float32)
    else:
        input_spec = tf.TensorSpec([None, n_features], tf.float32)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    variables = model.trainable_variables

    @tf.function(input_signature=[input_spec, target_spec], autograph=False)
    def train_step(inputs: Any, targets: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = data_loss(targets, logits)
            n = tf.cast(tf.shape(logits)[0], tf.float32)
            penalty = 0.5 * alpha * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels]) / n
            total = loss + penalty
        gradients = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    @tf.function(input_signature=[input_spec, target_spec], autograph=False)
    def eval_loss(inputs: Any, targets: Any) -> Any:
        return data_loss(targets, model(inputs, training=False))

    return train_step, eval_loss


def _batched_loss(tf: Any, eval_loss: Any, X: Any, targets: np.ndarray) -> float:
    total = 0.0
    for start in range(0, X.shape[0], _PREDICT_BATCH):
        stop = start + _PREDICT_BATCH
        total += float(eval_loss(_to_tensor(tf, X[start:stop]), targets[start:stop])) * len(targets[start:stop])
    return total / X.shape[0]


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    """scikit-learn estimator checks these estimators are known to fail, with the reason.

    scikit-learn >= 1.6 dropped the ``_xfail_checks`` tag; pass this function to
    ``sklearn.utils.estimator_checks.parametrize_with_checks(...,
    expected_failed_checks=expected_failed_checks)`` or call it for ``check_estimator``.
    """
    return dict(_EXPECTED_FAILED_CHECKS)


_EXPECTED_FAILED_CHECKS: dict[str, str] = {}
