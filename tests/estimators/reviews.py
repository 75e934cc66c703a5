"""A small movie-review sentiment task, shared by the search tests and the benchmark.

The reviews are generated (seeded), in the spirit of the classic movie-review
sentiment example: a char n-gram ``CountVectorizer`` feeds sparse counts to an
``MLPClassifier``.
"""

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.pipeline import Pipeline

from hpsearch.estimators import MLPClassifier

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "delightful", "masterpiece", "charming",
            "gripping", "beautiful"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "mess", "tedious", "waste", "clumsy", "predictable", "bland"]
NEUTRAL = ["the", "film", "plot", "actors", "movie", "story", "director", "scenes", "was", "and", "with", "a",
           "of", "cast", "ending", "music", "script", "it", "is", "this"]

# hidden_units x dropout, as in the issue
SPACE = {"clf__hidden_units": [(8,), (32,)], "clf__dropout": [0.0, 0.5]}


def make_reviews(n_samples=240, seed=0):
    """``(texts, labels)``: labels are "pos"/"neg"; a few reviews carry a word of the other side."""
    rng = np.random.RandomState(seed)
    texts, labels = [], []
    for i in range(n_samples):
        positive = i % 2 == 0
        own, other = (POSITIVE, NEGATIVE) if positive else (NEGATIVE, POSITIVE)
        words = list(rng.choice(NEUTRAL, size=rng.randint(6, 12)))
        words += list(rng.choice(own, size=rng.randint(1, 3)))
        if rng.rand() < 0.3:
            words.append(rng.choice(other))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append("pos" if positive else "neg")
    return texts, np.array(labels)


def make_pipeline(n_epochs=10):
    return Pipeline([
        ("vec", CountVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2)),
        ("clf", MLPClassifier(n_epochs=n_epochs, batch_size=32, learning_rate=0.01, random_state=0)),
    ])
