"""Freezing layer groups for gradual unfreezing (Howard & Ruder 2018, ULMFiT §3.2 "Gradual
unfreezing": first train only the last layer group, then unfreeze one more group per stage).

The semantics are fastai's ``Learner.freeze_to``: ``freeze_to(groups, n)`` freezes
``groups[:n]`` and trains the rest; a negative ``n`` counts from the end, so ``freeze_to(g, -1)``
trains only the last group, ``-2`` the last two, and ``0`` trains everything.
"""

from __future__ import annotations

from torch import nn


def _groups(layer_groups) -> list[list[nn.Parameter]]:
    """Accept the list of layer groups or a model that has ``layer_groups()``."""
    if hasattr(layer_groups, "layer_groups"):
        layer_groups = layer_groups.layer_groups()
    return [list(g) for g in layer_groups]


def _set_trainable(params: list[nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)
        if not trainable:
            p.grad = None  # a stale gradient must not move a frozen parameter


def freeze_to(layer_groups, n: int) -> None:
    """Freeze ``layer_groups[:n]`` (``requires_grad = False``), make the rest trainable.

    Negative ``n`` counts from the end. ``|n|`` may not exceed the number of groups. A parameter
    listed in both a frozen and a trainable group (tied weights) stays trainable.
    """
    groups = _groups(layer_groups)
    n_groups = len(groups)
    if not -n_groups <= n <= n_groups:
        raise ValueError(f"freeze_to: n={n} is out of range for {n_groups} layer groups")
    cut = n if n >= 0 else n_groups + n
    for params in groups[:cut]:
        _set_trainable(params, False)
    for params in groups[cut:]:
        _set_trainable(params, True)


def unfreeze(layer_groups) -> None:
    """Make every parameter of every group trainable (the last stage of gradual unfreezing)."""
    freeze_to(layer_groups, 0)


def n_trainable(model: nn.Module) -> int:
    """Number of trainable parameter elements (``requires_grad``) in ``model``; tied weights
    count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
