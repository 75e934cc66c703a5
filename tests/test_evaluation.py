"""evaluate() alone: one (candidate, fold), no scheduler, no threads."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold
from sklearn.svm import SVC

from hpsearch.evaluation import EvaluationContext, FoldResult, evaluate


class ParamsRecorder(ClassifierMixin, BaseEstimator):
    def __init__(self, c=1):
        self.c = c

    def fit(self, X, y, sample_weight=None, callbacks=None):
        # Raising makes evaluate() report the mismatch as the result's error.
        if sample_weight is None or len(sample_weight) != len(X):
            raise AssertionError(f"sample_weight not split with the fold: {sample_weight!r}")
        if callbacks != {"log": True}:
            raise AssertionError(f"a non-array fit param was altered: {callbacks!r}")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


@pytest.fixture
def iris_context():
    X, y = load_iris(return_X_y=True)
    splits = list(KFold(3, shuffle=True, random_state=0).split(X))
    return EvaluationContext(SVC(), X, y, splits, {"score": get_scorer("accuracy")})


def test_evaluate_equals_a_hand_written_fold(iris_context):
    ctx = iris_context
    result = evaluate(ctx, {"C": 0.5}, 1)
    train, test = ctx.splits[1]
    expected = SVC(C=0.5).fit(ctx.X[train], ctx.y[train]).score(ctx.X[test], ctx.y[test])
    assert result.test_scores == {"score": expected}
    assert result.error is None and result.n_test_samples == len(test)
    assert result.fit_time > 0 and result.score_time > 0
    assert ctx.estimator.get_params()["C"] == 1.0  # the template is never touched


def test_fit_params_are_split_by_fold_and_others_pass_through(iris_context):
    ctx = iris_context
    ctx.estimator = ParamsRecorder()
    ctx.fit_params = {"sample_weight": np.ones(len(ctx.y)), "callbacks": {"log": True}}
    result = evaluate(ctx, {"c": 2}, 0)
    assert result.error is None, result.error
    ctx.fit_params = {"callbacks": {"log": True}}
    assert "sample_weight not split" in evaluate(ctx, {"c": 2}, 0).error


def test_a_failing_fit_is_data_with_its_traceback(iris_context):
    ctx = iris_context
    ctx.error_score = -5.0
    ctx.return_train_score = True
    result = evaluate(ctx, {"C": -1.0}, 0)  # SVC refuses a negative C
    assert result.test_scores == {"score": -5.0} and result.train_scores == {"score": -5.0}
    assert "Traceback" in result.error and "C" in result.error
    assert isinstance(result.exception, ValueError)


def test_fold_result_message_round_trip_is_plain_and_checked():
    result = FoldResult({"a": np.float64(0.5)}, np.float32(0.25), 0.125, 30, {"a": 1.0}, error=None)
    message = result.to_message()
    assert type(message["test_scores"]["a"]) is float and type(message["fit_time"]) is float
    again = FoldResult.from_message(pickle.loads(pickle.dumps(message)))
    assert again == FoldResult({"a": 0.5}, 0.25, 0.125, 30, {"a": 1.0})
    for bad in ({**message, "test_scores": {"a": "x"}}, {**message, "fit_time": None},
                {**message, "error": 3}, {**message, "n_test_samples": 1.5}):
        with pytest.raises(ValueError):
            FoldResult.from_message(bad)


def test_error_text_on_the_wire_keeps_its_start_and_end_within_the_limit():
    from hpsearch.evaluation import MAX_ERROR_CHARS

    text = "Traceback (most recent call last):\n" + "  frame\n" * 50_000 + "ValueError: the cause"
    message = FoldResult({"a": 0.0}, 0.0, 0.0, 1, error=text).to_message()
    clipped = message["error"]
    assert len(clipped) < MAX_ERROR_CHARS + 100 < len(text)
    assert clipped.startswith("Traceback") and clipped.endswith("ValueError: the cause")
    assert "characters cut" in clipped
    short = FoldResult({"a": 0.0}, 0.0, 0.0, 1, error="ValueError: x").to_message()
    assert short["error"] == "ValueError: x"


class _RemembersTrainingFold(BaseEstimator):
    """Keeps a weak reference to the array it was fitted on."""

    def fit(self, X, y=None):
        import weakref

        self.fold_ = weakref.ref(X)
        return self

    def score(self, X, y=None):
        return 0.0 if self.fold_() is None else 1.0  # 1.0: the training fold is still alive


@pytest.mark.parametrize("return_train_score, alive", [(False, 0.0), (True, 1.0)])
def test_the_training_fold_is_let_go_before_the_test_fold_is_taken(return_train_score, alive):
    # Folds are copies: holding one at a time, not both, is what a fit adds to the data.
    X = np.arange(40.0).reshape(20, 2)
    context = EvaluationContext(_RemembersTrainingFold(), X, None, [(np.arange(10), np.arange(10, 20))],
                                {"score": lambda est, X, y=None: est.score(X)},
                                return_train_score=return_train_score)
    assert evaluate(context, {}, 0).test_scores == {"score": alive}


class _FailsOnOddRows(BaseEstimator):
    def fit(self, X, y=None):
        if len(X) % 2:
            raise ValueError("odd")
        return self

    def score(self, X, y=None):
        return float(len(X))


@pytest.mark.parametrize("return_train_score, alive", [(False, 0.0), (True, 1.0)])
def test_the_search_classes_also_let_the_training_fold_go_before_the_test_fold(return_train_score, alive):
    # scikit-learn's _fit_and_score, as hpsearch runs it for numpy data, takes the test
    # fold after the fit: both folds and the fit's own arrays are never held at once.
    from hpsearch import GridSearchCV

    X = np.arange(40.0).reshape(20, 2)
    search = GridSearchCV(_RemembersTrainingFold(), {}, cv=[(np.arange(10), np.arange(10, 20))], refit=False,
                          return_train_score=return_train_score).fit(X)
    assert search.cv_results_["mean_test_score"].tolist() == [alive]


@pytest.mark.parametrize("test", [np.arange(11, 14), np.isin(np.arange(20), [1, 3, 5])])
def test_a_failed_fit_counts_its_test_rows_as_scikit_learn_does(test):
    # The test fold is taken after the fit: a fit that fails counts its rows without it.
    from sklearn.metrics import check_scoring
    from sklearn.model_selection._validation import _fit_and_score

    from hpsearch._engine import _fit_and_score_plain

    X = np.arange(40.0).reshape(20, 2)
    train = np.arange(11)  # odd: the fit fails
    common = dict(train=train, test=test, parameters={}, fit_params=None, score_params=None,
                  return_train_score=False, error_score=-1.0)
    scorer = check_scoring(_FailsOnOddRows())
    ours = _fit_and_score_plain(_FailsOnOddRows(), X, None, scorer=scorer, **common)
    theirs = _fit_and_score(_FailsOnOddRows(), X, None, scorer=scorer, verbose=0, return_n_test_samples=True,
                            return_times=True, **common)
    assert ours["n_test_samples"] == theirs["n_test_samples"] == 3
    assert ours["test_scores"] == theirs["test_scores"] == -1.0
