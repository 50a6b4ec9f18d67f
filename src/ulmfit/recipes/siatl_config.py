"""Configuration of the SiATL recipe (Chronopoulou, Baziotis & Potamianos, NAACL 2019, "An
Embarrassingly Simple Approach for Transfer Learning from Pretrained Language Models"), the `siatl`
section of config.json.

"Paper" below is the paper; "their code" is the authors' repository (alexandra-chron/siatl,
model_configs/*.yaml, models/sent_clf.py, models/clf_trainer.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from ulmfit.errors import UlmfitError

PRETRAINED_OPTIMIZERS = ("sgd", "asgd", "adam")


@dataclass
class SiatlConfig:
    """One-step transfer: task loss + gamma * LM loss, sequential unfreezing, two optimizers."""

    task_hidden: int = 128  # units of the new task-specific LSTM (their code: top_rnn_size 100)
    drop_mult: float = 0.5  # scales the encoder's dropouts (fastai's classifier dropouts, as the ulmfit recipe)
    head_p: float = 0.3  # dropout on the attention-pooled vector (their code: attention_dropout 0.3)
    max_len: int = 128  # documents are truncated to their first max_len tokens (their code: seq_len 50-80)
    bs: int = 32  # their code: batch_size 32
    epochs: int = 15  # most epochs; early stopping usually ends sooner
    # As the ULMFiT classifier's: with few labels an epoch repeats the reshuffled data until it has at
    # least this many steps. Measured on the tweets with 100 labels: 4 steps an epoch (60 in all) left
    # the task loss near ln 3 and macro-F1 at 0.37, far behind ULMFiT (docs/BENCHMARKS.md, "SiATL").
    min_steps_per_epoch: int = 50
    # gamma: the weight of the LM loss. Their code: exp(linspace(-1.6, -2.3, 15)) indexed by epoch,
    # i.e. 0.20 -> 0.10 over 15 epochs, then held. Both 0 turns the LM loss off (the paper's ablation).
    gamma_start: float = 0.2
    gamma_end: float = 0.1
    gamma_epochs: int = 15
    unfreeze_lstm_epoch: int = 2  # 1-based: from this epoch the pretrained LSTM trains (their code: unfreeze_rnn 2)
    unfreeze_embedding_epoch: int = 5  # from this epoch the embeddings train too (their code: unfreeze_embed 5)
    # adam | sgd | asgd, for the pretrained part. The paper uses SGD (their code: ASGD at 0.01) on an
    # LM pretrained on 20M tweets, in domain for its tasks. From an out-of-domain LM SGD at 1e-2
    # barely moves it: measured on the tweets from general-en, 2,000 labels, seed 0, the LM loss
    # went 6.59 -> 6.52 in 5 epochs and test macro-F1 stayed at 0.40; Adam at 1e-3 took the LM loss
    # to 5.46 and macro-F1 to 0.59 (docs/BENCHMARKS.md, "SiATL"). sgd/asgd reproduce the paper.
    pretrained_optimizer: str = "adam"
    pretrained_lr: float = 1e-3  # LSTM + decoder bias (their code: ASGD's default lr 0.01, with sgd/asgd)
    embedding_lr: float | None = None  # the tied embedding/decoder; None: pretrained_lr (their code: 1e-4)
    new_lr: float = 1e-3  # Adam, for the new layers (their code: top_lr 5e-4)
    clip: float | None = 1.0  # gradient-norm clipping, per optimizer (their code: clip 1)
    metric: str = "macro_f1"  # model selection and early stopping
    patience: int | None = 3  # epochs without improvement before stopping (their code: 6, on the loss)
    unlabeled_lm: bool = True  # with unlabelled target text: one extra LM batch from it per step
    unlabeled_bptt: int = 70  # sequence length of those LM batches (AWD-LSTM's bptt)

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise UlmfitError(f"siatl config: {field}={getattr(self, field)!r}; {what}")

        def number(field: str) -> bool:
            v = getattr(self, field)
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for f in ("task_hidden", "max_len", "bs", "epochs", "gamma_epochs", "unfreeze_lstm_epoch",
                  "unfreeze_embedding_epoch", "unlabeled_bptt"):
            need(isinstance(getattr(self, f), int) and getattr(self, f) >= 1, f, "it must be an integer >= 1")
        need(isinstance(self.min_steps_per_epoch, int) and self.min_steps_per_epoch >= 0, "min_steps_per_epoch",
             "it must be an integer >= 0 (0: one pass over the data per epoch)")
        for f in ("drop_mult", "head_p", "gamma_start", "gamma_end", "pretrained_lr", "new_lr"):
            need(number(f) and getattr(self, f) >= 0, f, "it must be a number >= 0")
        need(self.head_p < 1, "head_p", "a dropout probability must be below 1")
        need(self.embedding_lr is None or (number("embedding_lr") and self.embedding_lr >= 0),
             "embedding_lr", "give a number >= 0, or null to use pretrained_lr")
        need(self.clip is None or (number("clip") and self.clip > 0), "clip", "give a number > 0, or null for no clipping")
        need(self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
             "patience", "give an integer >= 1, or null to never stop early")
        need((self.gamma_start > 0) == (self.gamma_end > 0), "gamma_end",
             "the exponential decay needs gamma_start and gamma_end both > 0, or both 0 to turn the LM loss off")
        need(self.unfreeze_embedding_epoch >= self.unfreeze_lstm_epoch, "unfreeze_embedding_epoch",
             f"the embeddings join after the LSTM: use a value >= unfreeze_lstm_epoch ({self.unfreeze_lstm_epoch})")
        need(self.pretrained_optimizer in PRETRAINED_OPTIMIZERS, "pretrained_optimizer",
             f"choose one of {', '.join(PRETRAINED_OPTIMIZERS)}")
        need(isinstance(self.unlabeled_lm, bool), "unlabeled_lm", "use true or false")
        need(isinstance(self.metric, str) and self.metric in ("macro_f1", "accuracy", "weighted_f1", "valid_loss"),
             "metric", "choose one of macro_f1, accuracy, weighted_f1, valid_loss")
