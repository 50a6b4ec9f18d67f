"""Training plots as PNG files.

Uses matplotlib's object API with the Agg canvas directly (no ``pyplot``), so nothing opens a
window and the global backend of the caller is left alone. Files are written atomically.
"""

from __future__ import annotations

import io
import math
import os
from numbers import Real

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ulmfit.fileio import atomic_write_bytes

LOSS_KEYS = ("train_loss", "valid_loss")
# Numeric bookkeeping fields of a history record that are not metrics.
NOT_METRICS = {"epoch", "step", "steps", "lr", "time", "elapsed", "seconds", "n", "n_train", "n_valid"}


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _value(record: dict, key: str) -> float:
    v = record.get(key)
    return float(v) if _is_number(v) else math.nan


def _metric_keys(records: list[dict]) -> list[str]:
    """Numeric keys other than the losses and bookkeeping (``*_s`` / ``*time*`` are timings)."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            skip = k in LOSS_KEYS or k in NOT_METRICS or k.endswith("_s") or "time" in k
            if not skip and _is_number(v) and k not in keys:
                keys.append(k)
    return keys


def _save(fig: Figure, out_png: str | os.PathLike) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(out_png, buf.getvalue())


def _mark_stages(axes, records: list[dict], xs: list[int]) -> None:
    """Dashed vertical lines between stages and the stage names along the top of the first axis."""
    stages = [str(r.get("stage", "")) for r in records]
    starts = [i for i in range(len(stages)) if i == 0 or stages[i] != stages[i - 1]]
    for i in starts:
        if i > 0:
            for ax in axes:
                ax.axvline(xs[i] - 0.5, color="gray", linestyle="--", linewidth=0.8)
        if stages[i]:
            axes[0].annotate(stages[i], xy=(xs[i] - 0.4, 1.0), xycoords=("data", "axes fraction"),
                             xytext=(0, 3), textcoords="offset points", fontsize=8, color="gray")


def _plot_metrics(ax, records: list[dict], xs: list[int], keys: list[str]) -> None:
    """Metrics on the left axis; perplexity-like keys (unbounded) on a log-scaled right axis."""
    ppl_keys = [k for k in keys if "perplexity" in k]
    other = [k for k in keys if k not in ppl_keys]
    for k in other:
        ax.plot(xs, [_value(r, k) for r in records], marker="o", label=k)
    if other:
        ax.legend(loc="upper left", fontsize=8)
    if ppl_keys:
        ax2 = ax.twinx() if other else ax
        for k in ppl_keys:
            ax2.plot(xs, [_value(r, k) for r in records], marker="s", linestyle=":", color="tab:red", label=k)
        ax2.set_yscale("log")
        ax2.set_ylabel("perplexity")
        ax2.legend(loc="upper right", fontsize=8)
    if not keys:
        ax.text(0.5, 0.5, "no metrics recorded", ha="center", va="center", transform=ax.transAxes)


def plot_history(records: list[dict], out_png: str | os.PathLike, title: str = "") -> None:
    """Loss curves (top) and metrics (bottom) per epoch, on one x axis across all stages.

    ``records`` are the per-epoch dicts of the training log (``stage``, ``epoch``,
    ``train_loss``, ``valid_loss`` and metrics such as ``accuracy``, ``macro_f1``,
    ``perplexity``); records without an ``epoch`` are ignored. Stage changes are marked.
    """
    records = [r for r in records if isinstance(r, dict) and "epoch" in r]
    xs = list(range(1, len(records) + 1))
    fig = Figure(figsize=(8, 6.5))
    ax_loss, ax_met = fig.subplots(2, 1, sharex=True)
    for k in LOSS_KEYS:
        ys = [_value(r, k) for r in records]
        if any(not math.isnan(y) for y in ys):
            ax_loss.plot(xs, ys, marker="o", label=k)
    ax_loss.set_ylabel("loss")
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    else:
        ax_loss.text(0.5, 0.5, "no losses recorded", ha="center", va="center", transform=ax_loss.transAxes)
    _plot_metrics(ax_met, records, xs, _metric_keys(records))
    ax_met.set_xlabel("epoch (all stages)")
    if records:
        _mark_stages([ax_loss, ax_met], records, xs)
        ax_met.set_xticks(xs)
    for ax in (ax_loss, ax_met):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png)


def plot_lr_find(lrs, losses, suggestion: float | None, out_png: str | os.PathLike) -> None:
    """Smoothed loss against learning rate (log x), with the suggested lr marked."""
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    lrs, losses = [float(x) for x in lrs], [float(y) for y in losses]
    if lrs:
        ax.plot(lrs, losses)
        ax.set_xscale("log")
    if suggestion is not None and math.isfinite(suggestion) and suggestion > 0:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2e}")
        ax.legend(fontsize=8)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss (smoothed)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save(fig, out_png)
