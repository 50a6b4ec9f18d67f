"""`ulmfit pretrain`'s configuration (the `pretrain` section: `--set FIELD=VALUE`, saved as
pretrain_config.json). The pretraining itself is recipes/pretrain.py (torch); this module stays
torch-free, like the sections of `fit` (recipes/config.py, ulmfit_config.py, siatl_config.py), so
that the CLI checks a bad value in milliseconds, before torch is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ulmfit.recipes import fields as F


@dataclass
class PretrainConfig:
    """`ulmfit pretrain`'s settings (`--set FIELD=VALUE`); fields shared with the other sections are
    declared once in recipes/fields.py and checked when the config is built."""

    preset: str = F.preset("small")
    drop_mult: float = F.drop_mult(0.5)  # less regularisation than fine-tuning: the corpus is large
    bs: int = F.batch_size(64)
    bptt: int = F.bptt(70)
    epochs: int = F.spec(1, ge=1)
    lr: float = F.learning_rate(5e-3)
    wd: float = F.weight_decay(0.01)
    schedule: str = F.schedule()
    min_freq: int = F.spec(5, ge=1)
    max_vocab: int = F.spec(30000, ge=16)
    max_train_tokens: int | None = F.max_train_tokens()  # None: the whole corpus
    valid_every: int = F.spec(100, ge=2)  # every 100th document is held out for validation perplexity
    checkpoint_every: int = F.spec(500, ge=1)  # steps
    precision: str = F.precision()
    seed: int = F.seed()
    # fwd | bwd: a backward LM reads every document from its last token to its first
    direction: str = F.spec("fwd", choices=("fwd", "bwd"))
    encoding: str = F.spec("utf-8")  # of the corpus shards (`corpus build` writes UTF-8); latin-1 reads any byte
    # full, though adaptive pretrained faster (small preset, 12.8k words, bf16: 2.1-2.2x the tokens per
    # CPU second; the full head's perplexity after 241 CPU s reached after 105, and 125 vs 260 at 241;
    # docs/BENCHMARKS.md, "Adaptive softmax in pretraining and LM fine-tuning"): the pretrained LM is
    # what every consumer reads, and fastai export needs a full softmax (SiATL's full decoder gets an
    # approximate conversion). `--set softmax=adaptive` for an LM meant for ULMFiT's LM phase.
    softmax: str = F.lm_softmax("full")
    cutoffs: tuple[int, ...] = F.softmax_cutoffs()

    RENAMED: ClassVar[dict] = {"max_tokens": "max_train_tokens"}  # old pretrain_config.json names

    def __post_init__(self) -> None:
        F.check(self, "pretrain")
        F.check_cutoffs(self, "pretrain")
