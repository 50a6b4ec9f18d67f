"""Evaluation metrics, a plain-text report, and early stopping.

Classification metrics come from ``sklearn.metrics`` with ``labels=range(len(class_names))``, so
a class absent from both ``y_true`` and ``y_pred`` still gets its row (with zeros:
``zero_division=0``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

from ulmfit.errors import UlmfitError

# Metric names the training loop may select on, and whether larger is better.
MAXIMIZE = ("accuracy", "macro_f1", "weighted_f1", "macro_f1_tuned")
MINIMIZE = ("loss", "valid_loss", "train_loss", "perplexity")
PERPLEXITY_LOSS_CAP = 100.0  # exp(100) ~ 2.7e43: a diverged model, but still a finite float


def _empty_metrics(class_names: list[str]) -> dict:
    k = len(class_names)
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    return {
        "accuracy": 0.0,
        "macro_f1": 0.0,
        "weighted_f1": 0.0,
        "per_class": {name: dict(zero) for name in class_names},
        "confusion": [[0] * k for _ in range(k)],
        "n": 0,
    }


def classification_metrics(y_true, y_pred, class_names: list[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion
    matrix (rows = true class, columns = predicted class) for integer class ids."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if y_true.size == 0:
        return _empty_metrics(class_names)
    labels = list(range(len(class_names)))
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    f1_kw = dict(labels=labels, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", **f1_kw)),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, average="weighted", **f1_kw)),
        "per_class": per_class,
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(y_true.size),
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others, widths fitted to the content."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_report(metrics: dict, class_names: list[str]) -> str:
    """A plain-text report: summary, per-class table and the confusion matrix with class names."""
    lines = [
        f"examples     {metrics.get('n', 0)}",
        f"accuracy     {metrics.get('accuracy', 0.0):.4f}",
        f"macro F1     {metrics.get('macro_f1', 0.0):.4f}",
        f"weighted F1  {metrics.get('weighted_f1', 0.0):.4f}",
        "",
    ]
    per_class = metrics.get("per_class", {})
    rows = []
    for name in class_names:
        m = per_class.get(name, {})
        rows.append(
            [
                name,
                f"{m.get('precision', 0.0):.4f}",
                f"{m.get('recall', 0.0):.4f}",
                f"{m.get('f1', 0.0):.4f}",
                str(m.get("support", 0)),
            ]
        )
    lines += _table(["class", "precision", "recall", "f1", "support"], rows)
    lines += ["", "confusion matrix (rows = true, columns = predicted)"]
    confusion = metrics.get("confusion", [])
    conf_rows = [[name, *map(str, row)] for name, row in zip(class_names, confusion)]
    lines += _table(["true \\ pred", *class_names], conf_rows)
    return "\n".join(lines) + "\n"


def perplexity(loss: Any) -> float:
    """Perplexity ``exp(loss)`` of a mean cross-entropy loss (in nats), with the loss capped at
    ``PERPLEXITY_LOSS_CAP`` so a diverged model gives a large finite number, not an overflow."""
    loss = float(loss)
    if math.isnan(loss):
        return math.nan
    return math.exp(min(loss, PERPLEXITY_LOSS_CAP))


def better(metric_name: str) -> str:
    """``"max"`` if a larger ``metric_name`` is better, ``"min"`` if a smaller one is.

    A ``valid_`` prefix is accepted (``valid_accuracy`` is ``accuracy``).
    """
    name = metric_name
    if name not in MINIMIZE and name.startswith("valid_"):
        name = name[len("valid_"):]
    if name in MAXIMIZE:
        return "max"
    if name in MINIMIZE:
        return "min"
    allowed = ", ".join(MAXIMIZE + MINIMIZE)
    raise ValueError(f"unknown metric {metric_name!r}; allowed: {allowed}")


class EarlyStopping:
    """Track the best value of a metric and stop after ``patience`` epochs without improvement.

    An improvement must beat the best by more than ``min_delta``. ``patience=None`` never stops
    (the best epoch is still tracked, for keeping the best weights). NaN is never an improvement.
    """

    def __init__(self, metric: str, patience: int | None = 3, min_delta: float = 0.0):
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.metric = metric
        self.mode = better(metric)
        self.patience = patience
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.epochs_seen = 0

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def step(self, value: float, epoch: int | None = None) -> bool:
        """Record this epoch's value; True if it is a new best. ``epoch`` defaults to the number
        of values seen before (0-based)."""
        value = float(value)
        epoch = self.epochs_seen if epoch is None else int(epoch)
        self.epochs_seen += 1
        if self._improves(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row brought no improvement."""
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        """JSON-serialisable counters for resuming."""
        return {
            "metric": self.metric,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "epochs_seen": self.epochs_seen,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters; ``patience`` and ``min_delta`` stay as constructed."""
        if state.get("metric", self.metric) != self.metric:
            raise UlmfitError(
                f"the checkpoint tracked metric {state['metric']!r} but this run selects on "
                f"{self.metric!r}; resume with the same metric or start a new run"
            )
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.best_epoch = state.get("best_epoch")
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.epochs_seen = int(state.get("epochs_seen", 0))
