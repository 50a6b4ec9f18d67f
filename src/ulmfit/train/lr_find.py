"""Learning-rate range test (Smith 2017 "Cyclical Learning Rates", §3.3; fastai's ``lr_find``).

Train for up to ``num_it`` mini-batches while the learning rate grows exponentially from
``start_lr`` to ``end_lr``, record the exponentially smoothed loss (beta 0.98, as fastai), stop
once it exceeds 4x the best, and put the model (weights, ``requires_grad``, train/eval mode) and
a given optimizer back as they were.

The suggestion is the learning rate at the **steepest descent** of the smoothed loss against
log(lr) (fastai v1's "min numerical gradient"), ignoring the first 10 and last 5 points as fastai
does; with too few points it falls back to ``min_loss_lr`` (the lr at the lowest loss, divided
by 10). ``valley`` (fastai v2's default suggestion) is reported too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ulmfit.train.device import on_device, training_device

SMOOTH_BETA = 0.98  # fastai's loss smoothing
DIVERGE_FACTOR = 4.0  # stop when the smoothed loss exceeds 4x the best (fastai)
SKIP_START, SKIP_END = 10, 5  # points ignored by the steepest-descent suggestion (fastai)


@dataclass
class LRFindResult:
    """Result of :func:`lr_find`. ``lrs`` are the top group's learning rates."""

    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    method: str  # "steepest" or "min_loss/10"
    min_loss_lr: float  # lr at the minimum smoothed loss, divided by 10
    valley: float
    raw_losses: list[float] = field(default_factory=list)


def _cycle(batches: Iterable) -> Iterator:
    """Iterate ``batches`` forever, starting it again when it runs out."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("lr_find: the batches are empty")


def _exp_lrs(start_lr: float, end_lr: float, num_it: int) -> list[float]:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_it < 2:
        raise ValueError(f"num_it must be >= 2, got {num_it}")
    return [start_lr * (end_lr / start_lr) ** (i / (num_it - 1)) for i in range(num_it)]


def _steepest(lrs: list[float], losses: list[float]) -> float | None:
    """lr where the smoothed loss falls fastest against log(lr); None with too few points."""
    lo, hi = SKIP_START, len(losses) - SKIP_END
    if hi - lo < 3:
        lo, hi = 0, len(losses)
    if hi - lo < 3:
        return None
    grads = np.gradient(np.asarray(losses[lo:hi]), np.log(np.asarray(lrs[lo:hi])))
    return float(lrs[lo + int(np.argmin(grads))])


def _valley(lrs: list[float], losses: list[float]) -> float:
    """fastai v2's ``valley``: the longest run of decreasing loss, 2/3 of the way down it
    (longest-decreasing-subsequence form, as fastai)."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    idx = max(max_start + int(sections) + int(sections / 2), 0)
    return float(lrs[min(idx, n - 1)])


def _set_lrs(optimizer: torch.optim.Optimizer, base: list[float], lr: float) -> None:
    """Top group at ``lr``; the others keep their ratio to it (discriminative lrs)."""
    top = max(base)
    for group, b in zip(optimizer.param_groups, base):
        group["lr"] = lr * (b / top if top > 0 else 1.0)


def _suggest(lrs, losses) -> tuple[float, str, float, float]:
    if not losses:
        raise RuntimeError("lr_find: no loss recorded (the first batch already diverged)")
    min_loss_lr = lrs[int(np.nanargmin(losses))] / 10
    steep = _steepest(lrs, losses)
    suggestion, method = (steep, "steepest") if steep is not None else (min_loss_lr, "min_loss/10")
    return suggestion, method, min_loss_lr, _valley(lrs, losses)


def _run(model, batches, loss_fn, optimizer, lrs_plan, stop_div, clip):
    """The sweep itself; returns (lrs, smoothed losses, raw losses)."""
    base = [g["lr"] for g in optimizer.param_groups]
    lrs, smooth_losses, raw = [], [], []
    avg, best = 0.0, math.inf
    model.train()
    for i, (lr, batch) in enumerate(zip(lrs_plan, _cycle(batches))):
        _set_lrs(optimizer, base, lr)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        avg = SMOOTH_BETA * avg + (1 - SMOOTH_BETA) * value
        smooth = avg / (1 - SMOOTH_BETA ** (i + 1))
        lrs.append(lr)
        smooth_losses.append(smooth)
        raw.append(value)
        best = min(best, smooth)
        if stop_div and smooth > DIVERGE_FACTOR * best:
            break
    return lrs, smooth_losses, raw


def lr_find(
    model: nn.Module,
    batches: Iterable,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    optimizer_factory: Callable[[], torch.optim.Optimizer] | torch.optim.Optimizer,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    stop_div: bool = True,
    clip: float | None = None,
) -> LRFindResult:
    """Learning-rate range test with no side effect on ``model`` (or a given optimizer).

    ``loss_fn(model, batch)`` returns the scalar loss of one batch, so the same function serves
    language models and classifiers (an LM's ``loss_fn`` should manage its own hidden state).
    ``optimizer_factory`` is a zero-argument callable building the optimizer on the model's
    parameters, or an optimizer (its state is restored afterwards). With discriminative groups
    the top group follows the sweep and the others keep their ratio to it, so the suggestion is
    the top group's lr. ``batches`` is iterated again when it runs out. ``clip``: optional
    gradient-norm clipping, as in training. It runs on the training device (train/device.py) as
    `run_phase` does: the model there for the sweep and back on the CPU after it.
    """
    lrs_plan = _exp_lrs(start_lr, end_lr, num_it)
    dev = training_device()
    model.to(dev)  # before the optimizer is built: its parameters are the same objects wherever they are
    model_state = copy.deepcopy(model.state_dict())
    requires_grad = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    given = isinstance(optimizer_factory, torch.optim.Optimizer)
    optimizer = optimizer_factory if given else optimizer_factory()
    opt_state = copy.deepcopy(optimizer.state_dict()) if given else None
    try:
        lrs, losses, raw = _run(model, on_device(batches, dev), loss_fn, optimizer, lrs_plan, stop_div, clip)
    finally:
        model.to("cpu")
        model.load_state_dict(model_state)
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)
        if given:
            optimizer.load_state_dict(opt_state)
    suggestion, method, min_loss_lr, valley = _suggest(lrs, losses)
    return LRFindResult(lrs, losses, suggestion, method, min_loss_lr, valley, raw)
