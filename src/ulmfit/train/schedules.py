"""Learning-rate and momentum schedules, as pure functions of the optimizer step.

Two schedules from the literature, plus a constant one:

* ``stlr``: slanted triangular learning rates, Howard & Ruder 2018 ("Universal Language Model
  Fine-tuning for Text Classification", ULMFiT) §3.2, eq. (3): a short linear warm-up over the
  first ``cut_frac`` of the steps, then a long linear decay. The paper's values are
  ``cut_frac = 0.1`` and ``ratio = 32``.
* ``one_cycle_lr`` / ``one_cycle_mom``: the one-cycle policy (Smith 2018, "A disciplined approach
  to neural network hyper-parameters"), in the cosine form of fastai's ``fit_one_cycle``:
  the learning rate goes from ``lr_max/div`` up to ``lr_max`` over ``pct_start`` of the steps and
  then down to ``lr_max/div_final``; momentum moves the opposite way (high, low, high).

Steps count from 0; ``total`` is the number of optimizer steps of the run, so the last step that
is actually taken is ``total - 1`` and ``step == total`` gives the end value of the schedule.
Steps outside ``[0, total]`` are clamped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("one_cycle", "stlr", "constant")


def _position(step: int, total: int) -> float:
    """Fraction of the run done at ``step``, clamped to [0, 1]."""
    if total <= 0:
        raise ValueError(f"total must be a positive number of steps, got {total}")
    return min(max(step / total, 0.0), 1.0)


def _cos_anneal(start: float, end: float, pos: float) -> float:
    """Cosine interpolation from ``start`` (pos=0) to ``end`` (pos=1), as fastai's SchedCos."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def _two_phase_cos(pos: float, pct_start: float, a: float, b: float, c: float) -> float:
    """Cosine from ``a`` to ``b`` over [0, pct_start], then cosine from ``b`` to ``c``."""
    if not 0.0 <= pct_start <= 1.0:
        raise ValueError(f"pct_start must be in [0, 1], got {pct_start}")
    if pct_start > 0 and pos < pct_start:
        return _cos_anneal(a, b, pos / pct_start)
    if pct_start >= 1.0:
        return b
    return _cos_anneal(b, c, (pos - pct_start) / (1 - pct_start))


def stlr(step: int, total: int, lr_max: float, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """Slanted triangular learning rate at ``step`` of ``total`` (ULMFiT §3.2, eq. 3).

    ``cut = floor(T * cut_frac)``; ``p = t / cut`` before the cut and
    ``1 - (t - cut) / (cut * (1 / cut_frac - 1))`` after it; ``lr = lr_max * (1 + p (ratio - 1)) / ratio``.
    So the rate starts at ``lr_max / ratio``, reaches ``lr_max`` exactly at ``t = cut`` and is back
    at ``lr_max / ratio`` at ``t = T``. Defaults ``cut_frac = 0.1`` and ``ratio = 32`` are the
    paper's (§3.2). When ``T * cut_frac < 1`` the cut is taken as one step; ``p`` is clamped to
    [0, 1] so rounding of the cut never takes the rate below ``lr_max / ratio``.
    """
    if not 0.0 < cut_frac < 1.0:
        raise ValueError(f"cut_frac must be in (0, 1), got {cut_frac}")
    if ratio < 1.0:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    if total <= 0:
        raise ValueError(f"total must be a positive number of steps, got {total}")
    t = min(max(step, 0), total)
    cut = max(math.floor(total * cut_frac), 1)
    if t < cut:
        p = t / cut
    else:
        p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    p = min(max(p, 0.0), 1.0)
    return lr_max * (1 + p * (ratio - 1)) / ratio


def one_cycle_lr(
    step: int,
    total: int,
    lr_max: float,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
) -> float:
    """One-cycle learning rate (Smith 2018; fastai's ``fit_one_cycle`` defaults).

    Cosine warm-up from ``lr_max / div`` to ``lr_max`` over the first ``pct_start`` of the steps,
    then cosine annealing down to ``lr_max / div_final``.
    """
    pos = _position(step, total)
    return _two_phase_cos(pos, pct_start, lr_max / div, lr_max, lr_max / div_final)


def one_cycle_mom(
    step: int,
    total: int,
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8),
    pct_start: float = 0.25,
) -> float:
    """One-cycle momentum (beta1 for Adam): cosine from ``moms[0]`` down to ``moms[1]`` while the
    learning rate rises, then back up to ``moms[2]`` (Smith 2018 §4: momentum inverse to the lr).
    ``(0.8, 0.7, 0.8)`` are fastai's defaults for text models."""
    pos = _position(step, total)
    return _two_phase_cos(pos, pct_start, moms[0], moms[1], moms[2])


@dataclass
class Schedule:
    """A schedule for one training stage.

    ``lr_mult(step)`` is the factor applied to every parameter group's base learning rate, so the
    discriminative ratios between groups (ULMFiT §3.2) are kept; ``lr(step) = lr_max * lr_mult(step)``.
    ``momentum(step)`` is beta1 for the one-cycle schedule and ``None`` otherwise (momentum then
    stays at the optimizer's beta1).
    """

    kind: str = "one_cycle"
    lr_max: float = 1e-3
    total_steps: int = 1
    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    cut_frac: float = 0.1
    ratio: float = 32.0
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            allowed = ", ".join(SCHEDULE_KINDS)
            raise ValueError(f"unknown schedule kind {self.kind!r}; allowed: {allowed}")
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}")
        self.moms = tuple(self.moms)  # JSON round trips give lists
        if len(self.moms) != 3:
            raise ValueError(f"moms must have three values (start, middle, end), got {self.moms}")

    def lr_mult(self, step: int) -> float:
        """Learning-rate factor relative to ``lr_max`` at ``step``."""
        if self.kind == "stlr":
            return stlr(step, self.total_steps, 1.0, self.cut_frac, self.ratio)
        if self.kind == "one_cycle":
            return one_cycle_lr(step, self.total_steps, 1.0, self.pct_start, self.div, self.div_final)
        return 1.0

    def lr(self, step: int) -> float:
        """Absolute learning rate of the top parameter group at ``step``."""
        return self.lr_max * self.lr_mult(step)

    def momentum(self, step: int) -> float | None:
        """beta1 / SGD momentum at ``step`` for one-cycle; ``None`` for stlr and constant."""
        if self.kind == "one_cycle":
            return one_cycle_mom(step, self.total_steps, self.moms, self.pct_start)
        return None
