"""Configuration of the SiATL recipe (Chronopoulou et al. 2019), the `siatl` section of config.json."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SiatlConfig:
    """One-step transfer: task loss + gamma * LM loss, sequential unfreezing, two optimizers."""

    task_hidden: int = 128  # units of the new task-specific LSTM layer on top of the pretrained stack
    drop_mult: float = 0.5
    bs: int = 32
    epochs: int = 15
    gamma_start: float = 0.2  # weight of the LM loss in epoch 1 (paper's code: ~0.2 -> ~0.1 over 15 epochs)
    gamma_end: float = 0.1
    gamma_epochs: int = 15  # epochs over which gamma decays exponentially; held at gamma_end after
    unfreeze_lstm_epoch: int = 2  # 1-based: from this epoch the pretrained LSTM trains
    unfreeze_embedding_epoch: int = 5  # from this epoch the embeddings train too
    pretrained_optimizer: str = "sgd"  # sgd | asgd, for the pretrained part
    pretrained_lr: float = 1e-2
    new_lr: float = 1e-3  # Adam, for the new layers
    clip: float = 1.0  # gradient-norm clipping, per optimizer
    metric: str = "macro_f1"  # model selection and early stopping
    patience: int | None = 3
