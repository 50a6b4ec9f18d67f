"""The TF-IDF recipe's registration and its section (`tfidf` in config.json); torch-free, like every
config module. `ulmfit fit --recipe tfidf` trains the baseline a user would try first (word n-grams,
TF-IDF, logistic regression; recipes/baselines.py) into an ordinary model folder (recipes/tfidf.py):
it predicts, evaluates, serves, calibrates and joins an `ulmfit ensemble` like any other.

Why a model folder and not only a benchmark line: on long, keyword-heavy documents (the SpamAssassin
e-mails) TF-IDF is the strong cheap peer, and its errors are not the neural models' (it reads every
word of a document, none of its order), which is what an ensemble member needs (docs/BENCHMARKS.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from ulmfit.recipes import fields as F
from ulmfit.recipes.registry import Recipe, lazy, register


@dataclass
class TfidfConfig:
    # Word 1..ngram_max grams: bigrams catch short phrases ("not good", "click here"), and are where the
    # baseline's accuracy comes from on the tweets and e-mails; 3-grams mostly add rare features.
    ngram_max: int = F.spec(2, ge=1, le=5)
    min_df: int = F.spec(2, ge=1)  # a feature must occur in this many training texts (drops typos and one-offs)
    max_features: int | None = F.spec(None, ge=1)  # keep the most frequent features only; None: all
    # Inverse regularization strengths tried, each fit on train and scored on validation by `metric`;
    # the best is kept (the same grid the benchmarks' TF-IDF peer uses).
    Cs: tuple[float, ...] = F.spec((0.3, 1.0, 3.0, 10.0, 30.0), gt=0)
    max_iter: int = F.spec(2000, ge=1)  # lbfgs iterations per C
    class_weights: str = F.class_weights("auto")  # "adjusted" has no logistic-regression form: no weights then
    metric: str = F.metric()

    def __post_init__(self) -> None:
        F.check(self, "tfidf")
        if not self.Cs:
            F.fail("tfidf", "Cs", self.Cs, "give at least one value, e.g. [1.0]")


RECIPE = register(Recipe(
    name="tfidf", section="tfidf", config=TfidfConfig, directions=("fwd",), default_direction="fwd",
    fit=lazy("ulmfit.recipes.tfidf", "fit_recipe"),
    load_model=lazy("ulmfit.recipes.tfidf", "load_model"),
    load_member=lazy("ulmfit.recipes.tfidf", "load_member"),
    lstm=False, pretrained_lm=False,
    summary="TF-IDF word n-grams + logistic regression: the quick baseline as a model folder (seconds to train)"))
