"""Knowledge distillation as a task of the one training loop (Hinton, Vinyals & Dean 2015,
"Distilling the Knowledge in a Neural Network"; Tang et al. 2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks").

A teacher's class probabilities ("soft targets") are looked up per row of the classification
loader by `ClsBatch.index`; rows without a gold label carry label -1 and learn from the soft term
only. The loss of a batch with student logits s, teacher probabilities p and gold labels y:

    (1 - alpha) * CE(s, y)            mean over the rows that have a gold label (0 if none)
  + alpha * T^2 * KL(p_T || softmax(s / T))   mean over all rows

where p_T = softmax(log p / T) (the teacher's probabilities at temperature T; teachers hand over
probabilities, e.g. an averaged fwd+bwd ensemble, so logits are recovered as log p). T^2 keeps the
soft term's gradient the same size as T changes (Hinton et al. §2): d(T^2 KL)/ds = T (softmax(s/T) - p_T).
At alpha = 0 the loss is exactly the plain cross-entropy on the gold rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ulmfit.train.tasks import ClassifierTask, ClassLoss

NO_LABEL = -1  # the label of a row that only has the teacher's soft target
PROB_FLOOR = 1e-8  # log(0) guard when turning teacher probabilities back into logits


def teacher_at_temperature(teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p_T = softmax(log p / T): [B, C] probabilities -> [B, C] probabilities, flatter for T > 1."""
    return F.softmax(torch.log(teacher_probs.float().clamp_min(PROB_FLOOR)) / temperature, dim=-1)


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor,
                      temperature: float, alpha: float, hard_loss: ClassLoss | None = None) -> torch.Tensor:
    """(1 - alpha) * CE(gold rows) + alpha * T^2 * KL(p_T || q_T) (all rows); see the module docstring.

    student_logits [B, C]; labels [B] int64, NO_LABEL (-1) where a row has no gold label;
    teacher_probs [B, C] (rows sum to 1). `hard_loss` (weighted or logit-adjusted, tasks.ClassLoss) is the
    gold term only; the soft term is never weighted."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    logits = student_logits.float()
    gold = labels != NO_LABEL
    if alpha < 1.0 and bool(gold.any()):
        hard = (hard_loss or ClassLoss())(logits[gold], labels[gold])
    else:
        hard = logits.sum() * 0.0  # no gold row in this batch: the soft term alone
    if alpha == 0.0:
        return hard
    p_t = teacher_at_temperature(teacher_probs, temperature)
    log_q = F.log_softmax(logits / temperature, dim=-1)
    kl = (p_t * (torch.log(p_t.clamp_min(PROB_FLOOR)) - log_q)).sum(-1).mean()
    return (1.0 - alpha) * hard + alpha * temperature ** 2 * kl


@dataclass
class SoftTargets:
    """The teacher's side of a student's training set: the gold rows first, then the unlabelled ones."""

    probs: np.ndarray  # [n_gold + n_unlabelled, C] float, the teacher's probabilities (T = 1), classes in run order
    extra_tokens: list[list[str]]  # the unlabelled rows' tokens: rows n_gold.. of `probs`
    temperature: float
    alpha: float


class DistillTask(ClassifierTask):
    """The classifier task with soft targets: training uses `distillation_loss`, validation is the
    inherited `ClassifierTask.evaluate` against the loader's GOLD labels (model selection stays on gold)."""

    def __init__(self, class_names: list[str], soft_targets: np.ndarray, temperature: float, alpha: float,
                 class_loss: ClassLoss | None = None):
        super().__init__(class_names, class_loss)
        self.soft_targets = soft_targets  # [n_rows, C], indexed by the loader's document index
        self.temperature, self.alpha = temperature, alpha

    def loss(self, model, batch) -> torch.Tensor:
        logits = model(batch.ids, batch.lengths)
        teacher = torch.from_numpy(np.asarray(self.soft_targets[batch.index.numpy()], dtype=np.float32)).to(logits.device)
        return distillation_loss(logits, batch.labels, teacher, self.temperature, self.alpha, self.class_loss)
