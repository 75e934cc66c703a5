"""Pipeline prefix reuse: the same results as refitting, with fewer fits, in bounded memory."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC, LinearSVC

from hpsearch import FitFailedWarning, InvalidParameterError, run_search
from hpsearch.evaluation import EvaluationContext
from hpsearch.prefix import PrefixCache, PrefixCacheConfig, cache_info, clear_cache, nbytes_of, plan_reuse
from tests.prefix_helpers import (
    CountingScaler,
    FailingTransformer,
    InPlaceScaler,
    first_step_name_scorer,
    text_corpus,
)

X_NUM, Y_NUM = make_classification(n_samples=200, n_features=12, n_informative=6, random_state=0)
DOCS, Y_TEXT = text_corpus()


def numeric_pipeline() -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("pca", PCA(random_state=0)), ("svc", SVC())])


NUMERIC_SPACE = {"pca__n_components": [3, 6], "svc__C": [0.1, 1.0, 10.0]}


def text_pipeline(clf) -> Pipeline:
    return Pipeline([("vect", TfidfVectorizer()), ("clf", clf)])


TEXT_SPACE = {"vect__ngram_range": [(1, 1), (1, 2)], "clf__C": [0.1, 1.0, 10.0]}


def assert_same_results(a, b) -> None:
    """Every cv_results_ entry but the timings is identical."""
    ra = a.cv_results_ if hasattr(a, "cv_results_") else a
    rb = b.cv_results_ if hasattr(b, "cv_results_") else b
    keys = {k for k in ra if "time" not in k}
    assert keys == {k for k in rb if "time" not in k}
    for key in keys:
        if key == "params":
            assert ra[key] == rb[key]
        elif key.startswith("param_"):
            assert list(ra[key]) == list(rb[key]), key
        else:
            np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


def search(estimator, space, X, y, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("cv", 3)
    return run_search(estimator, space, X, y, **kwargs)


# -- the same results -------------------------------------------------------------------------


@pytest.mark.parametrize("clf", [LinearSVC(random_state=0), LogisticRegression()], ids=["LinearSVC", "LogisticRegression"])
def test_text_pipeline_same_results_as_refitting_and_as_sklearn(clf):
    pipe = text_pipeline(clf)
    on = search(pipe, TEXT_SPACE, DOCS, Y_TEXT, workers=2, return_train_score=True)
    off = search(pipe, TEXT_SPACE, DOCS, Y_TEXT, workers=2, return_train_score=True, prefix_cache=False)
    assert_same_results(on, off)
    if isinstance(clf, LinearSVC):  # (one comparison with scikit-learn is enough)
        sk = GridSearchCV(pipe, TEXT_SPACE, cv=3, return_train_score=True).fit(DOCS, Y_TEXT)
        assert_same_results(on, sk)
        assert on.best_params_ == sk.best_params_


def test_numeric_pipeline_same_results_as_refitting_and_as_sklearn():
    pipe = numeric_pipeline()
    on = search(pipe, NUMERIC_SPACE, X_NUM, Y_NUM, workers=2, cv=5)
    off = search(pipe, NUMERIC_SPACE, X_NUM, Y_NUM, workers=2, cv=5, prefix_cache=False)
    assert_same_results(on, off)
    assert_same_results(on, GridSearchCV(pipe, NUMERIC_SPACE, cv=5).fit(X_NUM, Y_NUM))


def test_nested_pipeline_column_transformer_and_feature_union():
    X = np.column_stack([X_NUM, np.abs(X_NUM[:, :3])])
    union = FeatureUnion([("pca", PCA(n_components=2, random_state=0)), ("minmax", MinMaxScaler())])
    columns = ColumnTransformer([("scaled", StandardScaler(), list(range(12))), ("raw", "passthrough", [12, 13, 14])])
    pipe = Pipeline([
        ("prep", Pipeline([("columns", columns), ("union", union)])),
        ("model", Pipeline([("pca", PCA(random_state=0)), ("svc", SVC())])),
    ])
    space = {
        "prep__union__pca__n_components": [2, 3],
        "prep__columns__scaled__with_mean": [True, False],
        "model__pca__n_components": [4, 5],
        "model__svc__C": [0.5, 2.0],
    }
    on = search(pipe, space, X, Y_NUM, workers=2, return_train_score=True)
    assert_same_results(on, search(pipe, space, X, Y_NUM, workers=2, return_train_score=True, prefix_cache=False))


def test_steps_replaced_by_params_and_random_strategy():
    pipe = numeric_pipeline()
    space = {"scale": [StandardScaler(), "passthrough", MinMaxScaler()], "pca__n_components": [2, 4, 6],
             "svc__C": [0.1, 1.0, 10.0]}
    on = search(pipe, space, X_NUM, Y_NUM, strategy="random", n_iter=12, random_state=3, workers=2)
    off = search(pipe, space, X_NUM, Y_NUM, strategy="random", n_iter=12, random_state=3, workers=2,
                 prefix_cache=False)
    assert_same_results(on, off)


def test_bayes_search_reuses_prefixes_whose_values_repeat():
    from hpsearch import Categorical, Real

    space = {"pca__n_components": Categorical([3, 6]), "svc__C": Real(0.01, 100.0, prior="log-uniform")}
    clear_cache()
    on = search(numeric_pipeline(), space, X_NUM, Y_NUM, strategy="bayes", n_iter=8, random_state=0, workers=1)
    assert cache_info().hits >= 8 * 3 - 2 * 3 * 2  # at most 2 values x 3 folds x 2 levels computed
    off = search(numeric_pipeline(), space, X_NUM, Y_NUM, strategy="bayes", n_iter=8, random_state=0, workers=1,
                 prefix_cache=False)
    assert_same_results(on, off)


def test_callable_scorer_multimetric_and_final_step_fit_params():
    pipe = numeric_pipeline()
    weights = np.linspace(0.5, 1.5, len(Y_NUM))
    scoring = {"acc": "accuracy", "custom": first_step_name_scorer, "auc": "roc_auc"}
    kwargs = dict(scoring=scoring, refit="acc", fit_params={"svc__sample_weight": weights}, workers=2)
    on = search(pipe, NUMERIC_SPACE, X_NUM, Y_NUM, **kwargs)
    assert_same_results(on, search(pipe, NUMERIC_SPACE, X_NUM, Y_NUM, prefix_cache=False, **kwargs))
    sk = GridSearchCV(pipe, NUMERIC_SPACE, cv=3, scoring=scoring, refit="acc").fit(X_NUM, Y_NUM, svc__sample_weight=weights)
    assert_same_results(on, sk)


def test_failing_prefix_fails_like_refitting():
    pipe = Pipeline([("maybe", FailingTransformer()), ("clf", LogisticRegression())])
    space = {"maybe__fail": [False, True], "clf__C": [0.1, 1.0]}
    with pytest.warns(FitFailedWarning) as caught_on:
        on = search(pipe, space, X_NUM, Y_NUM, workers=2)
    with pytest.warns(FitFailedWarning) as caught_off:
        off = search(pipe, space, X_NUM, Y_NUM, workers=2, prefix_cache=False)
    assert_same_results(on, off)
    assert len(on.fit_failures_) == len(off.fit_failures_) == 6
    assert "this transformer was told to fail" in str(caught_on[0].message)
    assert len(caught_off) >= 1


def test_step_modifying_its_input_fails_instead_of_corrupting_the_cache():
    # The scaled rows are cached (a later step is searched); the next step writes into them.
    pipe = Pipeline([("scale", StandardScaler()), ("inplace", InPlaceScaler()), ("clf", LogisticRegression())])
    with pytest.raises(ValueError, match="read-only"):
        search(pipe, {"inplace__factor": [2.0, 3.0]}, X_NUM, Y_NUM, error_score="raise")


# -- fewer fits --------------------------------------------------------------------------------


def test_prefix_fitted_once_per_prefix_setting_and_fold():
    """2 prefix settings x 10 classifier settings x 5 folds: 10 prefix fits, not 100."""
    pipe = Pipeline([("scale", CountingScaler()), ("clf", LogisticRegression())])
    space = {"scale__factor": [1.0, 2.0], "clf__C": list(np.logspace(-2, 2, 10))}
    clear_cache()
    CountingScaler.fits = 0
    on = search(pipe, space, X_NUM, Y_NUM, cv=5, workers=2, refit=False)  # no fit on all the data
    assert CountingScaler.fits == 10
    info = cache_info()
    assert (info.misses, info.hits) == (10, 90)
    CountingScaler.fits = 0
    off = search(pipe, space, X_NUM, Y_NUM, cv=5, workers=2, refit=False, prefix_cache=False)
    assert CountingScaler.fits == 100
    assert_same_results(on, off)


def test_the_task_that_computes_a_prefix_counts_its_fit_time():
    """A prefix fit lasts at least 50 ms; 2 prefixes x 3 folds are fitted: the fit
    times of the search add up to at least those 6 fits (they are not hidden)."""
    pipe = Pipeline([("scale", CountingScaler(delay=0.05)), ("clf", LogisticRegression())])
    space = {"scale__factor": [1.0, 2.0], "clf__C": [0.1, 1.0, 10.0]}
    result = search(pipe, space, X_NUM, Y_NUM, cv=3, workers=2, refit=False)
    assert result.cv_results_["mean_fit_time"].sum() * 3 >= 6 * 0.05


def test_intermediate_levels_kept_only_when_a_later_step_is_searched():
    ctx = EvaluationContext(numeric_pipeline(), X_NUM, Y_NUM, splits=[], scorers={},
                            prefix_cache=PrefixCacheConfig(1 << 20, ("pca__n_components", "svc__C")))
    plan = plan_reuse(ctx, numeric_pipeline().set_params(pca__n_components=3))
    assert [(lv.path, lv.stored) for lv in plan.levels] == [("scale", True), ("pca", True)]
    ctx.prefix_cache = PrefixCacheConfig(1 << 20, ("scale__with_mean", "svc__C"))
    plan = plan_reuse(ctx, numeric_pipeline())
    assert [(lv.path, lv.stored) for lv in plan.levels] == [("scale", False), ("pca", True)]


def test_unsupported_pipelines_are_evaluated_the_plain_way():
    ctx = EvaluationContext(numeric_pipeline(), X_NUM, Y_NUM, splits=[], scorers={},
                            prefix_cache=PrefixCacheConfig(1 << 20))
    assert plan_reuse(ctx, numeric_pipeline()) is not None
    assert plan_reuse(ctx, numeric_pipeline().set_params(verbose=True)) is None
    assert plan_reuse(ctx, SVC()) is None
    ctx.fit_params = {"scale__sample_weight": np.ones(len(Y_NUM))}  # routed to a prefix step
    assert plan_reuse(ctx, numeric_pipeline()) is None
    ctx.fit_params = {}
    ctx.prefix_cache = None
    assert plan_reuse(ctx, numeric_pipeline()) is None


def test_prefix_cache_argument_is_checked():
    for bad in (0, -5, "1GB", 1.5):
        with pytest.raises(InvalidParameterError, match="prefix_cache"):
            search(numeric_pipeline(), NUMERIC_SPACE, X_NUM, Y_NUM, prefix_cache=bad)


# -- bounded memory ----------------------------------------------------------------------------


def test_cache_at_its_limit_evicts_and_stays_within_it_measured():
    limit = 4 << 20
    cache = PrefixCache(limit)
    rng = np.random.RandomState(0)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(60):
            rows = int(rng.randint(1_000, 12_000))

            def compute(rows=rows, i=i):
                value = np.full((rows, 20), float(i))
                return value, nbytes_of(value)

            cache.get_or_compute(("key", i), compute)
            info = cache.info()
            held = sum(nbytes_of(v) for v, _ in cache._entries.values())
            assert info.nbytes == held <= limit
            measured = tracemalloc.get_traced_memory()[0] - base
            assert measured <= limit + (256 << 10), f"{measured} bytes traced after entry {i}"
    finally:
        tracemalloc.stop()
    info = cache.info()
    assert info.evictions > 0 and info.entries < 60 and info.peak_nbytes <= limit
    # The most recently used entries are those kept.
    kept = [key[1] for key in cache._entries]
    assert kept == sorted(kept) and kept[-1] == 59
    # An entry larger than the whole limit is used but not kept.
    value, hit = cache.get_or_compute("huge", lambda: (np.zeros(limit), limit * 8))
    assert not hit and value.shape == (limit,) and "huge" not in cache._entries
    assert cache.info().rejected == 1


def test_search_with_a_small_cache_evicts_stays_within_limit_and_gives_the_same_results():
    pipe = numeric_pipeline()
    space = {"scale__with_std": [True, False], "pca__n_components": [3, 5, 7], "svc__C": [0.5, 2.0]}
    # One entry holds about 200 rows x 7 columns x 8 bytes; the limit keeps a few of the 30.
    limit = 40_000
    clear_cache()
    on = search(pipe, space, X_NUM, Y_NUM, cv=5, workers=2, prefix_cache=limit)
    info = cache_info()
    assert info.evictions > 0 and 0 < info.peak_nbytes <= limit
    assert info.entries == 0  # the search is over: its entries are gone
    assert_same_results(on, search(pipe, space, X_NUM, Y_NUM, cv=5, workers=2, prefix_cache=False))


def test_two_threads_wanting_the_same_prefix_compute_it_once():
    import threading

    cache = PrefixCache(1 << 20)
    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow():
        calls.append(1)
        started.set()
        assert release.wait(30)
        return "value", 10

    results = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
    second.start()
    release.set()
    first.join(30)
    second.join(30)
    assert len(calls) == 1
    assert sorted(results, key=lambda r: r[1]) == [("value", False), ("value", True)]


def test_count_vectorizer_chain_with_intermediate_level():
    pipe = Pipeline([("count", CountVectorizer()), ("tfidf", TfidfTransformer()), ("clf", LinearSVC(random_state=0))])
    space = {"count__min_df": [1, 2], "tfidf__sublinear_tf": [False, True], "clf__C": [0.5, 2.0]}
    on = search(pipe, space, DOCS, Y_TEXT, workers=2)
    assert_same_results(on, search(pipe, space, DOCS, Y_TEXT, workers=2, prefix_cache=False))
