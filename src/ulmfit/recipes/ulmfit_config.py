"""The ULMFiT recipe's registration and its classifier section (`clf` in config.json).

The recipe itself is recipes/ulmfit.py (torch); this module stays torch-free so that the
configuration can be checked at the door in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ulmfit.recipes import fields as F
from ulmfit.recipes.registry import Recipe, lazy, register


@dataclass
class ClassifierTrainConfig:
    """Classifier fine-tuning with gradual unfreezing (ULMFiT §3.3)."""

    drop_mult: float = F.drop_mult(0.5)  # fastai's book
    bs: int = F.batch_size(64)
    bptt: int = F.bptt(72)  # tokens the encoder reads at a time (fastai's seq_len)
    # Only the outputs at each document's last pool_len tokens are pooled (fastai's max_len, 72 * 20).
    pool_len: int = F.spec(72 * 20, ge=1)
    max_doc_tokens: int | None = F.max_doc_tokens(None)
    lin_sizes: tuple[int, ...] = F.lin_sizes((50,))
    # Gradual unfreezing: one learning rate and epoch count per stage: head, -2, -3, all.
    # None: fastai's book rates (2e-2, 1e-2, 5e-3, 1e-3) on a pretrained encoder; from scratch the
    # encoder has more to learn, so the last two stages keep higher rates (2e-2, 1e-2, 1e-2, 5e-3).
    lrs: tuple[float, ...] | None = F.stage_lrs(None)
    # Discriminative rates: the paper's 2.6 over the AWD-LSTM's 5 groups leaves the embeddings at lr / 46. A distilled
    # student on 281k soft-labelled rows fit its teacher better at 1.5 (docs/BENCHMARKS.md, issue 17's 27th session);
    # unmeasured with a few thousand labels, so the default stays the paper's.
    lr_factor: float = F.lr_factor(2.6)
    epochs: tuple[int, ...] = F.stage_epochs((1, 1, 1, 3))
    schedule: str = F.schedule()
    wd: float = F.weight_decay(0.01)
    metric: str = F.metric()
    patience: int | None = F.patience(2)
    class_weights: str = F.class_weights("auto")
    cv: str = F.cv("auto")  # small label sets: cross-validated selection (the reasons: fields.py)
    cv_folds: int = F.cv_folds(5)
    cv_below: int = F.cv_below(30)
    # With few labels an epoch is a handful of steps (500 texts: 8 batches of 64); each training
    # epoch then repeats the reshuffled data until it has at least this many steps, so every stage
    # of gradual unfreezing gets enough updates. The full tweets (465 batches) are unaffected.
    min_steps_per_epoch: int = F.min_steps_per_epoch(50)

    RENAMED: ClassVar[dict] = {"max_tokens": "max_doc_tokens", "max_len": "pool_len"}  # old config.json names
    BEFORE: ClassVar[dict] = {"cv": "off"}  # a saved run that predates the field: its value then (config.py)

    def __post_init__(self) -> None:
        F.check(self, "clf")


def _check_run(clf: ClassifierTrainConfig) -> None:
    """Rules between fields, on the resolved section of a run (before any data is read)."""
    if len(clf.lrs) != len(clf.epochs):
        F.fail("clf", "lrs", clf.lrs, f"give one rate per stage of clf.epochs {clf.epochs} ({len(clf.epochs)} stages)")


def _resolve(clf: ClassifierTrainConfig, pretrained: Path | None, large: bool) -> ClassifierTrainConfig:
    from dataclasses import replace

    if clf.lrs is not None:
        return clf
    return replace(clf, lrs=(2e-2, 1e-2, 5e-3, 1e-3) if large else (2e-2, 1e-2, 1e-2, 5e-3))


RECIPE = register(Recipe(
    name="ulmfit", section="clf", config=ClassifierTrainConfig, default=True,
    fit=lazy("ulmfit.recipes.ulmfit", "fit_recipe"), load_model=lazy("ulmfit.recipes.model_dir", "load_classifier_model"),
    resolve=_resolve, check=_check_run, summary="ULMFiT: fine-tune the LM on your text, then the classifier with gradual unfreezing"))
