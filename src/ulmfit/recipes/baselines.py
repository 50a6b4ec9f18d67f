"""The baseline a user would try first: TF-IDF (word 1-2 grams) + logistic regression, C chosen on validation.

`fit_tfidf_logreg` is the one fit: the demo's and the benchmarks' baseline (`tfidf_logreg`) and the
`tfidf` recipe's model folder (recipes/tfidf.py) both come from it.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

CS = (0.3, 1.0, 3.0, 10.0, 30.0)  # inverse regularization strengths tried, ascending (each fit warm-starts the next)


def vectorizer(ngram_max: int = 2, min_df: int = 2, max_features: int | None = None) -> TfidfVectorizer:
    """Word 1..ngram_max grams, lowercased, sublinear tf (1 + log tf), l2-normalized rows."""
    return TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True, lowercase=True,
                           max_features=max_features)


def fit_tfidf_logreg(train_texts, train_labels, valid_texts, valid_labels, Cs: Sequence[float] = CS,
                     class_weight=None, seed: int = 0, log=None, vec: TfidfVectorizer | None = None,
                     score: Callable | None = None, score_name: str = "macro-F1", max_iter: int = 2000):
    """Fit on train for each C, keep the best on valid; returns (fitted vectorizer, fitted classifier, info).
    `score(classifier, x_valid)` -> a number, larger is better (default: macro-F1 of the argmax), named
    `score_name` in the log.
    `log`: called with one line per C (each fit takes seconds to a minute on 30k texts)."""
    t0 = time.perf_counter()
    vec = vec if vec is not None else vectorizer()
    x_train, x_valid = vec.fit_transform(train_texts), vec.transform(valid_texts)
    score = score or (lambda clf, x: f1_score(valid_labels, clf.predict(x), average="macro"))
    best = None
    # Each C starts from the previous C's solution (Cs ascending, warm_start): the same convex optimum in
    # fewer iterations (measured in docs/BENCHMARKS.md, "The demo"); the best fit is kept as a copy.
    clf = LogisticRegression(max_iter=max_iter, class_weight=class_weight, random_state=seed, warm_start=True)
    for c in sorted(Cs):
        clf.set_params(C=c)
        clf.fit(x_train, train_labels)
        f1 = score(clf, x_valid)
        if log:
            log(f"tf-idf + logistic regression: C={c}, validation {score_name} {f1:.4f} ({time.perf_counter() - t0:.0f} s)")
        if best is None or f1 > best[0]:
            best = (f1, c, copy.deepcopy(clf))
    f1, c, clf = best
    info = {"C": c, "valid_score": float(f1), "seconds": time.perf_counter() - t0, "features": x_train.shape[1]}
    return vec, clf, info


def tfidf_logreg(train_texts, train_labels, valid_texts, valid_labels, Cs=CS, class_weight=None, seed: int = 0,
                 log=None):
    """`fit_tfidf_logreg` with the macro-F1 selection; returns (predict function, info dict)."""
    vec, clf, info = fit_tfidf_logreg(train_texts, train_labels, valid_texts, valid_labels, Cs, class_weight, seed, log)
    info["valid_macro_f1"] = info.pop("valid_score")
    return (lambda texts: np.asarray(clf.predict(vec.transform(texts)))), info
