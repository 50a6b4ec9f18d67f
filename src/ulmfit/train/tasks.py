"""What a training step and an evaluation mean for each kind of model.

The loop in `loop.py` knows nothing about language models or classifiers; a task gives it

    loss(model, batch) -> Tensor          the training loss of one batch (the loop backpropagates it)
    evaluate(model, loader) -> dict       validation metrics; must hold the loop's `monitor`

and optionally

    start_epoch(epoch)                    reset per-epoch state (`epoch`: the number in the log)
    epoch_record() -> dict                extra fields for the epoch's log line (e.g. loss parts)
    state_dict() / load_state_dict(d)     state carried across batches, for resuming mid-epoch

`LMTask` (next word, BPTT state carried) and `ClassifierTask` (cross-entropy on documents) are
here; a recipe with its own objective keeps its task beside it (recipes/siatl.py `SiatlTask`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ulmfit.models.awd_lstm import ar_tar_loss, detach_state
from ulmfit.train.calibration import class_weights, log_prior, tuned_macro_f1, weighting_rule
from ulmfit.train.metrics import classification_metrics, perplexity


class LMTask:
    """Next-token prediction with the hidden state carried from batch to batch (truncated BPTT).

    AR/TAR regularisation as in Merity et al. 2017 §4.6 (alpha=2, beta=1 are fastai's defaults).
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0):
        self.alpha, self.beta = alpha, beta
        self.state = None

    def start_epoch(self, epoch: int) -> None:
        self.state = None

    def state_dict(self) -> dict:
        """The hidden state carried between batches, for resuming inside an epoch."""
        return {"state": None if self.state is None else [(h.detach(), c.detach()) for h, c in self.state]}

    def load_state_dict(self, d: dict) -> None:
        self.state = d["state"]

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        state = detach_state(self.state) if self.state is not None else None
        if state is not None and state[0][0].shape[1] != x.shape[0]:
            state = None
        dropped, self.state, raw = model.features(x, state)
        loss = model.cross_entropy(dropped, y)  # decoder + softmax fused: no [B*T, V] logits
        if self.alpha or self.beta:
            loss = loss + ar_tar_loss(raw, dropped, self.alpha, self.beta)
        return loss

    @torch.no_grad()
    def evaluate(self, model, loader) -> dict:
        model.eval()
        total_loss, total_correct, total = 0.0, 0, 0
        state = None
        for x, y in loader:
            if state is not None and state[0][0].shape[1] != x.shape[0]:
                state = None
            logits, state, _, _ = model(x, state)
            logits = logits.float()
            n = y.numel()
            total_loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            total_correct += (logits.argmax(-1) == y).sum().item()
            total += n
        loss = total_loss / max(total, 1)
        return {"valid_loss": loss, "accuracy": total_correct / max(total, 1), "perplexity": perplexity(loss)}


class ClassLoss:
    """The classification loss of every recipe: cross-entropy with per-class `weight`s (inverse
    frequency or effective number) or with the logits moved by `shift` during training only, the
    logit-adjusted loss of Menon et al. (ICLR 2021, "Long-tail learning via logit adjustment", eq. 10:
    shift = tau * log prior, tau = 1): a rare class must win by a margin of -log(prior) while it
    trains, so the model's own (unshifted) logits favour it, without multiplying the gradients of its
    few examples. Both None: plain cross-entropy. Logits [B, C], labels [B] -> scalar."""

    def __init__(self, weight: torch.Tensor | None = None, shift: torch.Tensor | None = None):
        self.weight, self.shift = weight, shift

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.shift is not None:
            self.shift = self.shift.to(logits.device)  # moved once, kept there (`.to` is a no-op after)
            logits = logits + self.shift
        if self.weight is not None:
            self.weight = self.weight.to(logits.device)
        return F.cross_entropy(logits, labels, weight=self.weight)

    def denominator(self, labels: torch.Tensor) -> float:
        """What the batch's mean divides by: its examples, or the sum of their weights (weighted
        cross-entropy's mean); data-parallel training weighs each rank's share by it."""
        return float(len(labels)) if self.weight is None else float(self.weight[labels.to(self.weight.device)].sum())


def imbalance_loss(setting: str, labels, n_classes: int, cfg) -> ClassLoss:
    """The `ClassLoss` for a recipe's `class_weights` setting on these training labels; `cfg`: the
    run's `imbalance` section (its ratio, rule and beta resolve "auto")."""
    rule = weighting_rule(setting, labels, n_classes, cfg)
    if rule == "adjusted":
        return ClassLoss(shift=torch.tensor(log_prior(labels, n_classes), dtype=torch.float32))
    w = class_weights(labels, n_classes, rule, cfg.beta)
    return ClassLoss(weight=None if w is None else torch.tensor(w, dtype=torch.float32))


class ClassifierTask:
    """Cross-entropy on labelled documents (`ClassLoss`: weighted or logit-adjusted for imbalanced labels).

    `keep_probs`: `evaluate` also returns the validation probabilities (rounded to 6 places) under
    "probs", so they are kept in the epoch's log line and checkpoint: cross-validated selection
    (train/crossval.py) reads every epoch's held-out probabilities back, a resumed fold included."""

    def __init__(self, class_names: list[str], class_loss: ClassLoss | None = None, keep_probs: bool = False):
        self.class_names = class_names
        self.class_loss = class_loss or ClassLoss()
        self.keep_probs = keep_probs

    def loss(self, model, batch) -> torch.Tensor:
        return self.class_loss(model(batch.ids, batch.lengths), batch.labels)

    @torch.no_grad()
    def predict(self, model, loader) -> np.ndarray:
        """Class probabilities in the loader's original document order."""
        model.eval()
        probs = np.zeros((len(loader.docs), len(self.class_names)), dtype=np.float32)
        for batch in loader:
            probs[batch.index.numpy()] = torch.softmax(model(batch.ids, batch.lengths).float(), -1).cpu().numpy()
        return probs

    @torch.no_grad()
    def evaluate(self, model, loader) -> dict:
        probs = self.predict(model, loader)
        out = score_probs(probs, loader.labels, self.class_names)
        if self.keep_probs:
            out["probs"] = np.round(probs.astype(np.float64), 6).tolist()
        return out


def score_probs(probs: np.ndarray, labels, class_names: list[str]) -> dict:
    """The validation figures of a classifier's probabilities [N, C] against integer labels [N], every
    one a selection metric (recipes/fields.py METRICS): valid_loss (cross-entropy), accuracy, macro_f1
    and weighted_f1 of the argmax, and macro_f1_tuned (after the tuned decision rule, scored out of
    half: calibration.tuned_macro_f1)."""
    labels = np.asarray(labels, dtype=np.int64)
    loss = -float(np.mean(np.log(probs[np.arange(len(labels)), labels] + 1e-12)))
    m = classification_metrics(labels, probs.argmax(1), class_names)
    return {"valid_loss": loss, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "weighted_f1": m.get("weighted_f1", math.nan),
            "macro_f1_tuned": tuned_macro_f1(probs, labels, len(class_names))}

