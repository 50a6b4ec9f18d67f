"""Discriminative parameter groups and the optimizer factory.

Discriminative fine-tuning (Howard & Ruder 2018, ULMFiT §3.2): each layer group gets its own
learning rate, the top group ``lr`` and every group below ``1/2.6`` of the one above it
(``eta^{l-1} = eta^l / 2.6``).

Each parameter group dict carries:

* ``"lr"``: the current learning rate (changed every step by :func:`set_lr_mom`);
* ``"base_lr"`` and ``"initial_lr"``: the group's discriminative learning rate, which the schedule
  multiplies (``lr = base_lr * lr_mult``);
* ``"weight_decay"``: ``weight_decay`` for matrices, 0 for 1-D parameters (biases, BatchNorm and
  LayerNorm weights; fastai's ``bn_wd=False`` and ``wd_bn_bias=False``);
* ``"layer"``: the index of the layer group (lowest first), so freezing / lr code can find them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

OPTIMIZER_KINDS = ("adamw", "adam", "sgd")


def discriminative_lrs(n_groups: int, lr: float, factor: float = 2.6) -> list[float]:
    """Learning rates for ``n_groups`` layer groups, lowest first (ULMFiT §3.2).

    The last (top) group gets ``lr``; each lower group gets ``1/factor`` of the one above it,
    ``factor = 2.6`` being the paper's value.
    """
    if n_groups <= 0:
        raise ValueError(f"n_groups must be positive, got {n_groups}")
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return [lr / factor ** (n_groups - 1 - i) for i in range(n_groups)]


def _split_decay(params: Sequence[nn.Parameter], seen: set[int]) -> tuple[list, list]:
    """Split parameters into (decay, no_decay): 1-D tensors (biases, norm weights) get no decay.

    Parameters already in ``seen`` (tied weights listed in two groups) are skipped, because a
    torch optimizer refuses a parameter that appears in two groups; the first group keeps it.
    """
    decay, no_decay = [], []
    for p in params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def param_groups(
    layer_groups: list[list[nn.Parameter]],
    lr: float,
    factor: float = 2.6,
    weight_decay: float = 0.01,
) -> list[dict]:
    """Optimizer parameter groups for ``layer_groups`` (lowest first) with discriminative lrs.

    Each layer group becomes up to two dicts (with decay / without decay; empty ones are left
    out), both tagged with ``"layer": i``. ``weight_decay = 0.01`` is fastai's default.
    """
    lrs = discriminative_lrs(len(layer_groups), lr, factor)
    groups: list[dict] = []
    seen: set[int] = set()
    for i, (params, group_lr) in enumerate(zip(layer_groups, lrs)):
        decay, no_decay = _split_decay(list(params), seen)
        for sub, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if sub:
                groups.append(
                    {
                        "params": sub,
                        "lr": group_lr,
                        "initial_lr": group_lr,
                        "base_lr": group_lr,
                        "weight_decay": wd,
                        "layer": i,
                    }
                )
    if not groups:
        raise ValueError("param_groups: the layer groups hold no parameters")
    return groups


def make_optimizer(
    groups: list[dict],
    kind: str = "adamw",
    betas: tuple[float, float] = (0.8, 0.99),
    eps: float = 1e-5,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Build the optimizer for ``groups`` (from :func:`param_groups`).

    ``kind``: ``"adamw"`` (decoupled weight decay, fastai's default ``true_wd``), ``"adam"``
    (weight decay as L2 in the gradient) or ``"sgd"`` (with ``momentum``).

    Default ``betas = (0.8, 0.99)`` and ``eps = 1e-5`` are fastai's text defaults, where beta1 is
    then cycled 0.8 -> 0.7 -> 0.8 by the one-cycle schedule. The ULMFiT paper itself (§4,
    "Hyperparameters") used Adam with ``beta1 = 0.7`` and ``beta2 = 0.99``: pass
    ``betas=(0.7, 0.99)`` with the STLR schedule to follow it.
    """
    if kind == "adamw":
        return torch.optim.AdamW(groups, betas=betas, eps=eps)
    if kind == "adam":
        return torch.optim.Adam(groups, betas=betas, eps=eps)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum)
    allowed = ", ".join(OPTIMIZER_KINDS)
    raise ValueError(f"unknown optimizer kind {kind!r}; allowed: {allowed}")


def _base_lr(group: dict) -> float:
    """The group's base lr; groups built elsewhere get their current lr recorded as base."""
    if "base_lr" not in group:
        group["base_lr"] = group.get("initial_lr", group["lr"])
    return group["base_lr"]


def set_lr_mom(optimizer: torch.optim.Optimizer, lr_mult: float, momentum: float | None) -> None:
    """Set every group's lr to ``base_lr * lr_mult``; when ``momentum`` is not None set beta1
    (Adam/AdamW) or the momentum (SGD) of every group to it."""
    for group in optimizer.param_groups:
        group["lr"] = _base_lr(group) * lr_mult
        if momentum is None:
            continue
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = momentum
