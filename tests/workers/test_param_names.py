"""The per-class cache of scikit-learn's parameter names (installed in worker processes)
answers exactly what scikit-learn does."""

from __future__ import annotations

import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from hpsearch.workers import param_names


@pytest.fixture
def cached():
    sklearn_names = {cls: cls._get_param_names() for cls in (LogisticRegression, SVC, Pipeline)}
    param_names.install()
    try:
        yield sklearn_names
    finally:
        param_names.uninstall()


def test_same_names_and_clones_as_sklearn(cached):
    for cls, names in cached.items():
        assert cls._get_param_names() == names
        assert cls._get_param_names() == names  # from the cache
    pipe = Pipeline([("scale", StandardScaler()), ("clf", SVC(C=3.0))])
    nested = [pipe, VotingClassifier([("lr", LogisticRegression(C=2.0)), ("svc", SVC())]),
              ColumnTransformer([("s", StandardScaler(), [0])])]
    for estimator in nested:
        params = clone(estimator).get_params(deep=True)
        param_names.uninstall()
        expected = clone(estimator).get_params(deep=True)
        param_names.install()
        assert params.keys() == expected.keys()
        assert repr(clone(estimator)) == repr(estimator)
    assert clone(pipe).set_params(clf__C=5.0).get_params()["clf__C"] == 5.0
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        clone(pipe).set_params(bogus=1)


def test_a_fresh_list_each_time(cached):
    names = SVC._get_param_names()
    names.append("bogus")
    assert "bogus" not in SVC._get_param_names()


def test_a_replaced_constructor_is_read_again(cached):
    class Est(BaseEstimator):
        def __init__(self, a=1):
            self.a = a

    assert Est._get_param_names() == ["a"]

    def init(self, a=1, b=2):
        self.a, self.b = a, b

    Est.__init__ = init  # type: ignore[method-assign]
    assert Est._get_param_names() == ["a", "b"]
    assert Est(b=5).get_params() == {"a": 1, "b": 5}


def test_varargs_raise_every_time(cached):
    class Bad(BaseEstimator):
        def __init__(self, *args):
            self.args = args

    for _ in range(2):
        with pytest.raises(RuntimeError, match="no varargs"):
            Bad._get_param_names()


def test_own_get_param_names_is_kept(cached):
    class Own(BaseEstimator):
        def __init__(self, a=1):
            self.a = a

        @classmethod
        def _get_param_names(cls):
            return ["a", "extra"]

    assert Own._get_param_names() == ["a", "extra"]


def test_uninstall_restores_sklearn():
    original = BaseEstimator.__dict__["_get_param_names"]
    param_names.install()
    param_names.install()  # idempotent
    assert BaseEstimator.__dict__["_get_param_names"] is not original
    param_names.uninstall()
    param_names.uninstall()
    assert BaseEstimator.__dict__["_get_param_names"] is original
    assert not param_names.installed()
