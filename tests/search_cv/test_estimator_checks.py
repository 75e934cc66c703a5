"""scikit-learn's estimator checks, run on the three search classes."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

from hpsearch import BayesSearchCV, GridSearchCV, RandomizedSearchCV, Real

#: The one check expected to fail: scikit-learn lists it (with check_requires_y_none,
#: which passes here) as expected to fail for its own GridSearchCV and
#: RandomizedSearchCV (sklearn/utils/_test_common/instance_generator.py). It comes
#: from the search's tags (not multi-output), not from where fits run
#: (check_supervised_y_2d passes when the inner estimator warns about a 2-d y, as
#: LogisticRegression does).
SEARCH_XFAILS = {
    "check_supervised_y_2d": "DataConversionWarning not caught (scikit-learn's own search fails it too)",
}

ESTIMATORS = [
    GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=2, error_score="raise"),
    RandomizedSearchCV(
        LogisticRegression(), {"C": [0.1, 1.0]}, n_iter=2, cv=2, error_score="raise", random_state=0, workers=2
    ),
    BayesSearchCV(
        Ridge(), {"alpha": Real(0.1, 1.0)}, n_iter=2, cv=2, random_state=0,
        optimizer_kwargs={"n_initial_points": 2},
    ),
]


def expected_failed_checks(estimator):
    return SEARCH_XFAILS if isinstance(estimator.estimator, Ridge) else {}


@pytest.mark.slow
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_search_classes_pass_estimator_checks(estimator, check):
    check(estimator)
