"""The two per-epoch schedules of SiATL (Chronopoulou et al. 2019, §2, paragraphs "Exponential
decay of gamma" and "Sequential unfreezing"):

- `gamma_at`: the weight of the auxiliary LM loss, decaying exponentially over the first epochs;
- `trainable_parts`: sequential unfreezing, new layers first, then the pretrained LSTM, then the
  embeddings.

Epochs are 1-based here, as in the authors' trainer (`self.epoch += 1` before the first batch).
"""
from __future__ import annotations

import math

PARTS = ("new", "lstm", "embedding")  # names of the parameter partitions, top first


def gamma_at(epoch: int, start: float, end: float, n_epochs: int) -> float:
    """LM-loss weight of 1-based `epoch`: `start` at epoch 1, `end` at epoch `n_epochs` and after,
    geometric in between: gamma_e = start * (end / start) ** ((e - 1) / (n_epochs - 1)).

    This is the authors' `exp(linspace(log start, log end, n_epochs))[e - 1]` (their code passes
    the exponents -1.6 and -2.3, i.e. 0.20 -> 0.10 over 15 epochs, and holds the last value).
    `start == end == 0` gives 0 (no LM loss); `n_epochs == 1` gives `end` from the first epoch.
    """
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}")
    if start == 0 and end == 0:
        return 0.0
    if start <= 0 or end <= 0:
        raise ValueError(f"an exponential decay needs start and end > 0, got {start}, {end}")
    if epoch >= n_epochs:
        return float(end)
    frac = (epoch - 1) / (n_epochs - 1)
    return float(math.exp(math.log(start) + frac * (math.log(end) - math.log(start))))


def trainable_parts(epoch: int, unfreeze_lstm_epoch: int, unfreeze_embedding_epoch: int) -> tuple[str, ...]:
    """Which partitions train in 1-based `epoch`: ("new",) before `unfreeze_lstm_epoch`, then
    ("new", "lstm"), and ("new", "lstm", "embedding") from `unfreeze_embedding_epoch` (the
    authors' defaults are 2 and 5). A partition, once unfrozen, stays unfrozen."""
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}")
    parts = ["new"]
    if epoch >= unfreeze_lstm_epoch:
        parts.append("lstm")
        if epoch >= unfreeze_embedding_epoch:
            parts.append("embedding")
    return tuple(parts)
