"""scikit-learn's estimator checks, run on both TensorFlow estimators."""

import pytest

pytest.importorskip("tensorflow")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from hpsearch.estimators import MLPClassifier, MLPRegressor  # noqa: E402
from hpsearch.estimators._mlp import expected_failed_checks  # noqa: E402

pytestmark = pytest.mark.tensorflow

# Small networks trained briefly but with a larger step size: every check fits several
# times, and check_classifiers_train / check_regressors_train still need good scores.
FAST = dict(hidden_units=(32,), n_epochs=60, learning_rate=0.01)


@parametrize_with_checks(
    [MLPClassifier(**FAST), MLPRegressor(**FAST)],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
