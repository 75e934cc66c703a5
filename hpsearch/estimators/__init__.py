"""TensorFlow/Keras estimators behind the scikit-learn API.

Importing this package does not import TensorFlow: it is imported on the first
``fit``, and a missing installation raises
:class:`~hpsearch.errors.MissingDependencyError` naming the extra to install
(``pip install hpsearch[tensorflow]``).

>>> from hpsearch import run_search
>>> from hpsearch.estimators import MLPClassifier
>>> # result = run_search(MLPClassifier(n_epochs=20, random_state=0),
>>> #                     {"hidden_units": [(32,), (64, 32)], "dropout": [0.0, 0.2]},
>>> #                     X, y, cv=3, workers=2)
"""

from ._mlp import MLPClassifier, MLPRegressor
from ._tf import TensorFlowConfigError, configure_tensorflow, import_tensorflow

__all__ = [
    "MLPClassifier",
    "MLPRegressor",
    "TensorFlowConfigError",
    "configure_tensorflow",
    "import_tensorflow",
]
