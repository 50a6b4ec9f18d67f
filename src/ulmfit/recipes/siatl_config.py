"""Configuration of the SiATL recipe (Chronopoulou, Baziotis & Potamianos, NAACL 2019, "An
Embarrassingly Simple Approach for Transfer Learning from Pretrained Language Models"), the `siatl`
section of config.json.

"Paper" below is the paper; "their code" is the authors' repository (alexandra-chron/siatl,
model_configs/*.yaml, models/sent_clf.py, models/clf_trainer.py).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from ulmfit.recipes import fields as F
from ulmfit.recipes.registry import Recipe, Run, lazy, register

PRETRAINED_OPTIMIZERS = ("sgd", "asgd", "adam")
Auto = Literal["auto"]

# What the "auto" fields become (`resolve`). With a pretrained LM: Adam at a fine-tuning rate and
# the staged unfreezing of the paper (their code: unfreeze_rnn 2, unfreeze_embed 5). From scratch a
# random LSTM stack passes almost no signal up: train it all from the first epoch, with Adam at a
# from-scratch rate (measured with the paper's SGD at a fine-tuning rate and the staged unfreezing:
# macro-F1 at majority-class level after 3 epochs).
AUTO_PRETRAINED = dict(pretrained_optimizer="adam", pretrained_lr=1e-3, new_lr=1e-3,
                       unfreeze_lstm_epoch=2, unfreeze_embedding_epoch=5)
AUTO_SCRATCH = dict(pretrained_optimizer="adam", pretrained_lr=1e-2, new_lr=1e-2,
                    unfreeze_lstm_epoch=1, unfreeze_embedding_epoch=1)


@dataclass
class SiatlConfig:
    """One-step transfer: task loss + gamma * LM loss, sequential unfreezing, two optimizers.

    Fields set to "auto" are resolved per run: `AUTO_PRETRAINED` with a pretrained LM,
    `AUTO_SCRATCH` without one. A value you set is kept as it is, whatever the other fields."""

    task_hidden: int = F.spec(128, ge=1)  # units of the new task-specific LSTM (their code: top_rnn_size 100)
    drop_mult: float = F.drop_mult(0.5)  # scales the encoder's dropouts (fastai's classifier dropouts, as the ulmfit recipe)
    head_p: float = F.spec(0.3, ge=0, lt=1)  # dropout on the attention-pooled vector (their code: attention_dropout 0.3)
    max_doc_tokens: int = F.max_doc_tokens(128)  # documents are truncated to their first tokens (their code: seq_len 50-80)
    bs: int = F.batch_size(32)  # their code: batch_size 32
    epochs: int = F.spec(15, ge=1)  # most epochs; early stopping usually ends sooner
    # As the ULMFiT classifier's: with few labels an epoch repeats the reshuffled data until it has at
    # least this many steps. Measured on the tweets with 100 labels: 4 steps an epoch (60 in all) left
    # the task loss near ln 3 and macro-F1 at 0.37, far behind ULMFiT (docs/BENCHMARKS.md, "SiATL").
    min_steps_per_epoch: int = F.min_steps_per_epoch(50)
    # gamma: the weight of the LM loss. Their code: exp(linspace(-1.6, -2.3, 15)) indexed by epoch,
    # i.e. 0.20 -> 0.10 over 15 epochs, then held. Both 0 turns the LM loss off (the paper's ablation).
    gamma_start: float = F.gamma_start(0.2)
    gamma_end: float = F.gamma_end(0.1)
    gamma_epochs: int = F.gamma_epochs(15)
    unfreeze_lstm_epoch: int | Auto = F.spec("auto", ge=1)  # 1-based: from this epoch the pretrained LSTM trains
    unfreeze_embedding_epoch: int | Auto = F.spec("auto", ge=1)  # from this epoch the embeddings train too
    # adam | sgd | asgd, for the pretrained part. The paper uses SGD (their code: ASGD at 0.01) on an
    # LM pretrained on 20M tweets, in domain for its tasks. From an out-of-domain LM SGD at 1e-2
    # barely moves it: measured on the tweets from general-en, 2,000 labels, seed 0, the LM loss
    # went 6.59 -> 6.52 in 5 epochs and test macro-F1 stayed at 0.40; Adam at 1e-3 took the LM loss
    # to 5.46 and macro-F1 to 0.59 (docs/BENCHMARKS.md, "SiATL"). sgd/asgd reproduce the paper.
    pretrained_optimizer: str = F.spec("auto", choices=PRETRAINED_OPTIMIZERS + ("auto",))
    pretrained_lr: float | Auto = F.spec("auto", ge=0)  # LSTM + decoder bias (their code: ASGD's default lr 0.01, with sgd/asgd)
    embedding_lr: float | None = F.spec(None, ge=0)  # the tied embedding/decoder; None: pretrained_lr (their code: 1e-4)
    new_lr: float | Auto = F.spec("auto", ge=0)  # Adam, for the new layers (their code: top_lr 5e-4)
    clip: float | None = F.clip(1.0)  # gradient-norm clipping, per optimizer (their code: clip 1); None: none
    metric: str = F.metric()
    patience: int | None = F.patience(3)  # their code: 6, on the loss
    unlabeled_lm: bool = True  # with unlabelled target text: one extra LM batch from it per step
    unlabeled_bptt: int = F.bptt(70)  # sequence length of those LM batches (AWD-LSTM's bptt)
    class_weights: str = F.class_weights("auto")  # the task loss, as clf.class_weights
    # Cross-validated selection as clf.cv, but off by default: SiATL's language model trains jointly
    # with the classifier, so each fold is a whole SiATL run (nothing shared between folds); at 500
    # labels one run took 24 min (3 epochs, loaded 2-core machine), 5 folds + the refit six times that.
    # `--set siatl.cv=auto` (or on) to pay for it.
    cv: str = F.cv("off")
    cv_folds: int = F.cv_folds(5)
    cv_below: int = F.cv_below(30)

    RENAMED: ClassVar[dict] = {"max_len": "max_doc_tokens"}  # old config.json names

    def __post_init__(self) -> None:
        F.check(self, "siatl")
        F.check_gamma(self, "siatl")
        lstm, emb = self.unfreeze_lstm_epoch, self.unfreeze_embedding_epoch
        if emb != "auto":  # an "auto" LSTM epoch may resolve to the pretrained-LM value
            lstm_at = AUTO_PRETRAINED["unfreeze_lstm_epoch"] if lstm == "auto" else lstm
            if emb < lstm_at:
                F.fail("siatl", "unfreeze_embedding_epoch", emb, f"the embeddings join after the LSTM: use a value "
                                                                 f">= unfreeze_lstm_epoch ({lstm} = {lstm_at})")

    def resolved(self, pretrained: bool) -> "SiatlConfig":
        """Every "auto" field filled in for a run with (`pretrained=True`) or without a pretrained LM.
        An "auto" embedding epoch is never before a set LSTM epoch."""
        auto = dict(AUTO_PRETRAINED if pretrained else AUTO_SCRATCH)
        if self.unfreeze_lstm_epoch != "auto":
            auto["unfreeze_embedding_epoch"] = max(auto["unfreeze_embedding_epoch"], self.unfreeze_lstm_epoch)
        return replace(self, **{k: v for k, v in auto.items() if getattr(self, k) == "auto"})


def _fit(run: Run) -> dict:
    """SiATL (recipes/siatl.py) on the pretrained LM mapped to this run's vocabulary, not fine-tuned."""
    from ulmfit.recipes import model_dir
    siatl = importlib.import_module("ulmfit.recipes.siatl")  # its train_siatl, or cv_siatl when cross-validating
    from ulmfit.recipes.toolbox import LMResult, language_model, seed_all, target_vocab, tokens_for
    from ulmfit.text.vocab import Vocab

    cfg, out, data = run.configs["fwd"], run.out, run.data
    seed_all(cfg.seed)
    pretrained = model_dir.resolve_pretrained(cfg.pretrained, "fwd")
    tokens = tokens_for(pretrained, data, {}, run.log)
    vocab = (Vocab.load(out / "vocab.json") if run.resume and (out / "vocab.json").exists()
             else target_vocab(tokens.lm, cfg.lm, pretrained))
    model_dir.save_text_pipeline(out, tokens.tokenizer.config, vocab)
    lm, lm_cfg = language_model(pretrained, vocab, replace(cfg.lm, drop_mult=cfg.siatl.drop_mult, softmax="full"),
                                 run.log)  # SiATL has its own full tied decoder: an adaptive LM is converted (toolbox.py)
    n = len(data.train.texts)
    unlabeled_docs = vocab.encode_many(tokens.lm[n:]) if len(tokens.lm) > n else None
    base = LMResult(lm, lm_cfg, tokens.tokenizer, vocab, [])
    common = dict(unlabeled_docs=unlabeled_docs, seed=cfg.seed, precision=cfg.precision, resume=run.resume,
                  train_tokens=tokens.lm[:n], imbalance=cfg.imbalance, log=run.log)
    if cfg.siatl.cv == "on":  # resolved from "auto" for this data by posthoc.resolve_selection
        return siatl.cv_siatl(base, data.train, data.valid, data.classes, out, cfg.siatl, **common)
    return siatl.train_siatl(base, data.train, data.valid, data.classes, out, cfg.siatl, **common)[1]


RECIPE = register(Recipe(
    name="siatl", section="siatl", config=SiatlConfig, directions=("fwd",),
    fit=_fit, load_model=lazy("ulmfit.recipes.siatl", "load_siatl_model"),
    resolve=lambda s, pretrained, large: s.resolved(pretrained is not None),
    summary="SiATL: one training run, task loss + a decaying LM loss, sequential unfreezing"))
