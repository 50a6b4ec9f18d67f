"""SiATL's two optimizers (Chronopoulou et al. 2019, §2, "Optimizers"): plain SGD (or ASGD, as in
the authors' code) for the pretrained part, which should move slowly, and Adam for the new layers,
which start from random values; each is clipped on its own and steps only while it has unfrozen
parameters.

Frozen parameters have `requires_grad=False` and no `.grad`, and neither SGD (no momentum, no
weight decay here), ASGD nor Adam touches a parameter without a gradient, so they stay
bit-identical while frozen.
"""
from __future__ import annotations

import torch
from torch import nn

from ulmfit.train.siatl_schedule import trainable_parts

PRETRAINED_PARTS = ("lstm", "embedding")


def make_optimizers(parts: dict[str, list[nn.Parameter]], kind: str = "adam", pretrained_lr: float = 1e-3,
                    embedding_lr: float | None = None, new_lr: float = 1e-3) -> dict[str, torch.optim.Optimizer]:
    """{"pretrained": Adam (SiatlConfig's default), SGD or ASGD (the paper's) over parts "lstm" (lr pretrained_lr) and "embedding" (lr
    embedding_lr, default pretrained_lr), "new": Adam over part "new" (lr new_lr)}.

    The authors' code: ASGD with torch's default lr 0.01 for the LSTM and LM head, ASGD lr 1e-4 for
    the embedding, Adam lr 5e-4 for the top; no weight decay anywhere."""
    groups = [{"params": parts["lstm"], "lr": pretrained_lr, "part": "lstm"},
              {"params": parts["embedding"], "lr": pretrained_lr if embedding_lr is None else embedding_lr,
               "part": "embedding"}]
    if kind == "sgd":
        pretrained = torch.optim.SGD(groups, lr=pretrained_lr, momentum=0.0, weight_decay=0.0)
    elif kind == "asgd":
        pretrained = torch.optim.ASGD(groups, lr=pretrained_lr, weight_decay=0.0)
    elif kind == "adam":  # not SiATL's choice: for an LM that starts random (no pretraining)
        pretrained = torch.optim.Adam(groups, lr=pretrained_lr, weight_decay=0.0)
    else:
        raise ValueError(f"pretrained optimizer must be sgd, asgd or adam, not {kind!r}")
    new = torch.optim.Adam([{"params": parts["new"], "lr": new_lr, "part": "new"}], lr=new_lr)
    return {"pretrained": pretrained, "new": new}


def set_trainable(parts: dict[str, list[nn.Parameter]], active: tuple[str, ...]) -> None:
    """requires_grad True for the partitions in `active`, False (and no gradient) for the others."""
    for name, params in parts.items():
        for p in params:
            p.requires_grad_(name in active)
            if name not in active:
                p.grad = None


def clip_and_step(optimizers: dict[str, torch.optim.Optimizer], clip: float | None) -> dict[str, float]:
    """For each optimizer holding at least one parameter with a gradient: clip the norm of its
    gradients to `clip` (the authors' code: 1, per optimizer) and step. Returns the gradient norm
    of each optimizer that stepped (before clipping)."""
    norms = {}
    for name, opt in optimizers.items():
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            continue
        if clip:
            norms[name] = float(torch.nn.utils.clip_grad_norm_(params, clip))
        opt.step()
    return norms


class SiatlStepper:
    """The loop's stepper for SiATL (see train/loop.py `GroupStepper` for the protocol): the two
    optimizers above, sequential unfreezing at the start of every epoch (1-based epochs, the
    paper's), constant rates (no schedule, as the paper), each optimizer clipped on its own."""

    def __init__(self, parts: dict[str, list[nn.Parameter]], optimizers: dict[str, torch.optim.Optimizer],
                 clip: float | None, unfreeze_lstm_epoch: int, unfreeze_embedding_epoch: int):
        self.parts, self.optimizers, self.clip = parts, optimizers, clip
        self.unfreeze = (unfreeze_lstm_epoch, unfreeze_embedding_epoch)

    def start_stage(self, stage, steps_per_epoch: int) -> None:
        pass

    def start_epoch(self, epoch: int) -> None:
        set_trainable(self.parts, trainable_parts(epoch, *self.unfreeze))

    def set_step(self, step: int) -> None:
        pass

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self, model) -> None:
        clip_and_step(self.optimizers, self.clip)  # an optimizer with no unfrozen parameter does not step

    def state_dict(self) -> dict:
        return {k: o.state_dict() for k, o in self.optimizers.items()}

    def load_state_dict(self, d: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(d[name])
