"""`ulmfit fit --recipe tfidf`: TF-IDF word n-grams + logistic regression as a model folder (settings:
recipes/tfidf_config.py; the fit itself: recipes/baselines.py `fit_tfidf_logreg`, C chosen on the
validation split by the section's `metric`). `fit` then calibrates it and writes its reports as for
every recipe (recipes/fit.py, posthoc.py).

The model folder (marker recipe "tfidf"), nothing pickled:
```
DIR/tfidf.json           how texts are read (sklearn TfidfVectorizer settings), the n-gram terms in
                         feature order, the chosen C and the number of features
DIR/tfidf.safetensors    idf [F] (float64), coef [C, F] and intercept [C] of the class logits
```
The class probabilities are softmax(tfidf(text) @ coef.T + intercept). A two-class logistic regression
(one weight vector w, b: p(second) = sigmoid(x.w + b)) is stored as the equivalent two rows
(-w/2, w/2), (-b/2, b/2): softmax of those is that sigmoid exactly, so every folder has one form.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json
from ulmfit.recipes.registry import Run
from ulmfit.train.calibration import class_weights, softmax
from ulmfit.train.checkpoint import load_weights, save_weights
from ulmfit.train.metrics import classification_metrics, better

CONFIG_FILE, WEIGHTS_FILE = "tfidf.json", "tfidf.safetensors"
FORMAT = 1
PREDICT_CHUNK = 4096  # texts vectorized at a time: memory flat in the number of texts predicted
ABSENT = -1e4  # the logit of a class with no training example (the classifier never saw it: probability ~0)


def logit_params(clf, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted sklearn LogisticRegression as (coef [n_classes, F], intercept [n_classes]) of softmax logits,
    rows in class-id order; a binary model as its two-row equivalent (module docstring)."""
    coef, intercept = np.asarray(clf.coef_, dtype=np.float64), np.asarray(clf.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: one logit z for clf.classes_[1]; softmax([-z/2, z/2]) = [1 - s(z), s(z)]
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    full_coef = np.zeros((n_classes, coef.shape[1]))
    full_intercept = np.full(n_classes, ABSENT)
    for row, c in enumerate(np.asarray(clf.classes_, dtype=np.int64)):
        full_coef[c], full_intercept[c] = coef[row], intercept[row]
    return full_coef, full_intercept


@dataclass(frozen=True)
class TfidfReading:
    """How a TF-IDF model reads text: what identifies its pipeline (predictor.proba_by_direction keys on it)."""

    ngram_max: int
    lowercase: bool
    sublinear_tf: bool
    token_pattern: str
    n_features: int


class TfidfModel:
    """The vectorizer and the class logits' weights: `proba(texts)` -> [N, C] float32."""

    def __init__(self, vec, coef: np.ndarray, intercept: np.ndarray):
        self.vec, self.coef, self.intercept = vec, coef, intercept

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.intercept)), dtype=np.float32)
        for i in range(0, len(texts), PREDICT_CHUNK):
            x = self.vec.transform(texts[i:i + PREDICT_CHUNK])
            out[i:i + PREDICT_CHUNK] = softmax(np.asarray(x @ self.coef.T) + self.intercept)
        return out

    def eval(self) -> "TfidfModel":
        return self  # nothing trains at prediction time; the predictor's load path calls it on every model


def fit_recipe(run: Run) -> dict:
    """Fit for each C on the training split, keep the best on validation, save the folder; returns the
    validation metrics of the kept model."""
    from ulmfit.recipes.baselines import fit_tfidf_logreg, vectorizer
    from ulmfit.train.tasks import score_probs

    cfg, data, out, log = run.configs["fwd"], run.data, run.out, run.log
    t, k = cfg.tfidf, len(data.classes)
    rule = t.class_weights
    weights = None if rule in ("none", "adjusted") else class_weights(data.train.labels, k, rule)
    if rule == "adjusted":
        log("tfidf.class_weights=adjusted has no logistic-regression form: the classes are not weighted "
            "(the tuned decision rule after training still serves the rare classes)")
    if len(data.unlabeled):
        log(f"tf-idf reads labelled texts only: the {len(data.unlabeled):,} unlabelled texts are not used (the ULMFiT "
            f"recipes fine-tune their language model on them; `ulmfit distill` can teach a student over them)")
    sign = 1.0 if better(t.metric) == "max" else -1.0

    def score(clf, x_valid) -> float:
        coef, intercept = logit_params(clf, k)
        probs = softmax(np.asarray(x_valid @ coef.T) + intercept)
        return sign * score_probs(probs, data.valid.labels, data.classes)[t.metric]

    vec, clf, info = fit_tfidf_logreg(
        data.train.texts, data.train.labels, data.valid.texts, data.valid.labels, Cs=t.Cs,
        class_weight=None if weights is None else {i: float(w) for i, w in enumerate(weights)}, seed=cfg.seed,
        log=log, vec=vectorizer(t.ngram_max, t.min_df, t.max_features), score=score, score_name=t.metric,
        max_iter=t.max_iter)
    coef, intercept = logit_params(clf, k)
    save_tfidf(out, vec, coef, intercept, info["C"])
    log(f"tf-idf + logistic regression: {info['features']:,} features, C={info['C']} kept "
        f"({info['seconds']:.1f} s)")
    probs = TfidfModel(vec, coef, intercept).proba(data.valid.texts)
    metrics = classification_metrics(data.valid.labels, probs.argmax(1), data.classes)
    metrics["tfidf"] = {"C": info["C"], "features": info["features"], "seconds": round(info["seconds"], 2),
                        "class_weights": rule}
    return metrics


def save_tfidf(folder: Path, vec, coef: np.ndarray, intercept: np.ndarray, c: float) -> None:
    terms = vec.get_feature_names_out().tolist()
    atomic_write_json(folder / CONFIG_FILE, {
        "format": FORMAT, "ngram_max": vec.ngram_range[1], "lowercase": vec.lowercase, "sublinear_tf": vec.sublinear_tf,
        "token_pattern": vec.token_pattern, "C": c, "n_features": len(terms), "terms": terms}, indent=None)
    save_weights({"idf": torch.from_numpy(np.asarray(vec.idf_, dtype=np.float64)), "coef": torch.from_numpy(coef),
                  "intercept": torch.from_numpy(intercept)}, folder / WEIGHTS_FILE)


def load_tfidf(folder: Path) -> tuple[TfidfModel, TfidfReading]:
    """The model of a folder `save_tfidf` wrote, checked: terms, idf and weights must agree in size."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from ulmfit.recipes.model_dir import read_json, read_marker

    folder = Path(folder)
    path = folder / CONFIG_FILE
    d = read_json(path)  # missing, not JSON, not an object: one line (the folder validator's reader)
    try:
        terms, ngram_max = d["terms"], int(d["ngram_max"])
        reading = TfidfReading(ngram_max, bool(d["lowercase"]), bool(d["sublinear_tf"]), str(d["token_pattern"]),
                               len(terms))
        if not (isinstance(terms, list) and all(isinstance(s, str) for s in terms) and len(set(terms)) == len(terms)):
            raise ValueError("'terms' must be a list of distinct strings")
    except (ValueError, KeyError, TypeError) as e:
        raise UlmfitError(f"{path}: corrupt ({type(e).__name__}: {e}); retrain or restore the model folder") from None
    w = load_weights(folder / WEIGHTS_FILE)
    n_classes = len(read_marker(folder).get("classes") or []) or None
    shapes = {k: tuple(v.shape) for k, v in w.items()}
    k = shapes.get("intercept", (0,))[0]
    want = {"idf": (len(terms),), "coef": (k, len(terms)), "intercept": (k,)}
    if shapes != want or (n_classes is not None and k != n_classes):
        raise UlmfitError(f"{folder / WEIGHTS_FILE}: shapes {shapes} do not match {CONFIG_FILE} ({len(terms):,} terms) "
                          f"and the marker's {n_classes} classes; the files come from different models: retrain or "
                          f"restore the folder")
    vec = TfidfVectorizer(ngram_range=(1, ngram_max), lowercase=reading.lowercase, sublinear_tf=reading.sublinear_tf,
                          token_pattern=reading.token_pattern, vocabulary={s: i for i, s in enumerate(terms)})
    vec.idf_ = w["idf"].numpy()
    return TfidfModel(vec, w["coef"].numpy(), w["intercept"].numpy()), reading


def load_model(folder: Path) -> TfidfModel:
    return load_tfidf(folder)[0]


def load_member(folder: Path, direction: str = "fwd") -> "TfidfMember":
    model, reading = load_tfidf(folder)
    return TfidfMember(direction, TfidfText(reading), None, model)


@dataclass
class TfidfText:
    """The member's text pipeline: the vectorizer reads raw text itself, so tokenizing is the identity."""

    config: TfidfReading

    def tokenize_many(self, texts: Sequence[str]) -> list[str]:
        return list(texts)


@dataclass
class TfidfMember:
    """A TF-IDF model for recipes/predictor.py (the face of its `Member`)."""

    direction: str
    tokenizer: TfidfText
    vocab: None
    model: TfidfModel

    def predict_proba(self, texts: list[str], n_classes: int, bs: int = 128) -> np.ndarray:
        return self.model.proba(texts)
