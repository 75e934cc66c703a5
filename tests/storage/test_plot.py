"""hpsearch.plot on results, scikit-learn's cv_results_ and storage files."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hpsearch import InvalidParameterError, MissingDependencyError, plot  # noqa: E402
from hpsearch.storage import load_search  # noqa: E402

from . import searches  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def best_line(ax):
    (line,) = ax.get_lines()
    return line.get_xdata(), line.get_ydata()


def test_best_score_of_a_result_and_of_its_storage(tmp_path):
    db = tmp_path / "s.db"
    result = searches.search("random", storage=db)
    scores = result.cv_results_["mean_test_score"]
    xs, ys = best_line(result.plot("best"))
    np.testing.assert_array_equal(xs, np.arange(1, len(scores) + 1))
    np.testing.assert_array_equal(ys, np.maximum.accumulate(scores))

    ax = plot.best_score(str(db), x="time")  # from the file: wall-clock times
    stored = load_search(db)
    xs, ys = best_line(ax)
    assert ax.get_xlabel() == "seconds since the search started"
    assert len(xs) == stored.candidates_done and np.all(np.diff(xs) >= 0) and xs[0] >= 0
    assert ys[-1] == result.best_score_
    assert stored.plot("param", param="x").get_xlabel() == "x"


def test_score_vs_param_on_scikit_learns_cv_results():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = GridSearchCV(SVC(), {"C": [0.01, 1, 100], "kernel": ["rbf", "linear"]}, cv=3).fit(X, y)
    ax = plot.score_vs_param(grid.cv_results_, "C")
    assert ax.get_xscale() == "log"  # 0.01 .. 100 spans four decades
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_array_equal(offsets[:, 1], grid.cv_results_["mean_test_score"])
    ax = plot.score_vs_param(grid.cv_results_, "kernel")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["rbf", "linear"]
    xs, _ = best_line(plot.best_score(grid.cv_results_, x="time"))
    assert np.all(np.diff(xs) > 0)


def test_failed_candidates_and_multi_metric():
    cv_results = {"params": [{"a": 1}, {"a": 2}, {"a": 3}], "mean_test_acc": np.array([0.5, math.nan, 0.7]),
                  "mean_test_f1": np.array([0.1, 0.2, 0.3])}
    with pytest.raises(InvalidParameterError, match=r"pass metric= \(one of \['acc', 'f1'\]\)"):
        plot.best_score(cv_results)
    _, ys = best_line(plot.best_score(cv_results, metric="acc"))
    assert list(ys) == [0.5, 0.5, 0.7]
    with pytest.raises(InvalidParameterError, match="no candidate has the parameter 'b'; parameters: \\['a'\\]"):
        plot.score_vs_param(cv_results, "b", metric="acc")
    with pytest.raises(InvalidParameterError, match="kind must be"):
        plot.plot(cv_results, "pie", metric="acc")


def test_without_matplotlib_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "hpsearch\[plot\]"'):
        plot.best_score({"params": [{"a": 1}], "mean_test_score": np.array([1.0])})
