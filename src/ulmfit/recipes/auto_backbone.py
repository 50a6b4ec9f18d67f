"""The model of a run whose user chose none (`ulmfit fit --train my.csv --out m`: recipe "auto", the
default of `FitConfig.recipe`): ULMFiT on MiniLM for short texts when the transformers extra is
installed, the AWD-LSTM ULMFiT recipe otherwise. `fit` (recipes/fit.py) asks `settle` before it reads
the data (a config that already decides the model), `choose` once the training texts are read, and
saves the resolved recipe in config.json, so --resume, the marker, reload, predict and serve never
see "auto". The CLI's `--backbone` maps onto the config through `use_backbone`, the rule's own door.

The rule applies only when nothing in the run decides the model: no recipe (no --recipe; so not
distill or siatl), no --backbone, `pretrained` "auto" (an explicit --pretrained names an AWD-LSTM
language model), direction fwd (the transformer recipe reads forward only), one process (under
torchrun only the ulmfit recipe runs). Then MiniLM when (a) the transformers extra and the MiniLM
package import (models/transformer.py's `import_transformers` / `resolve_transformer`) and (b) at
least `SHORT_SHARE` of a seeded sample of at most `SAMPLE_TEXTS` labelled training texts fit one
encoder window (`transformer.window`, 128 word pieces incl. [CLS]/[SEP]) with the MiniLM tokenizer.

The evidence (docs/BENCHMARKS.md; test macro-F1; AMD EPYC CPU, one thread):
* short texts: tweets, all of a 2,000-tweet sample in one window (tweets and the 40/55/5 tweets: 100%;
  median 31 word pieces). ULMFiT on MiniLM beat the AWD-LSTM default (fwd) at every label budget:
  balanced tweets, 3-seed medians, 100 / 500 / 2,000 labels 0.6073 / 0.6707 / 0.7267 vs 0.5237 / 0.5852 /
  0.6378 (fwd+bwd 0.5441 / 0.6223 / 0.6612), all labels 0.7935 vs 0.7221 (seed 0 vs 3-seed median); the
  founding user's 40/55/5 tweets, 500 labels 0.6026 vs 0.5103 (3-seed medians), 2,000 labels 0.6692 vs
  0.5609 (seed 0), where the AWD-LSTM is below both balanced baselines (TF-IDF 0.5554, frozen MiniLM 0.5962).
* long documents: SpamAssassin e-mail, 24% of a 2,000-e-mail sample in one window (median 239 word
  pieces), read by the transformer in many windows. At 500 labels the AWD-LSTM (it reads whole texts)
  won: fwd 0.9601, fwd+bwd 0.9682 vs ULMFiT on MiniLM's 0.9531 (seed 0); MiniLM won only at 100 labels
  (0.9377 vs fwd+bwd 0.9289); at 2,000 labels fwd+bwd (0.9760) is level with fine-tuned MiniLM (0.9761).
  Training took about as long either way at 100 labels on a shared core (MiniLM 2,248 s, peak 2.8 GB;
  the AWD-LSTM default 4,105 s, 2.1 GB); the AWD-LSTM predicts 25-40x faster (tweets, in bulk).
  Since then (eleventh session, seed 0) MiniLM with today's defaults (mean pooling, a longer last stage)
  scored 0.9820 at 500 e-mail labels against the AWD-LSTM fwd+bwd's 0.9684, training 2.7x as long and
  predicting the test e-mails 7x slower. The rule still sends long documents to the AWD-LSTM: one seed at
  one budget, with 2,000 and all labels (where the AWD-LSTM led, 0.9760 / 0.9781) not re-run, does not
  outweigh a model that is several times cheaper to train and to serve on every long text.
* `SHORT_SHARE` 0.9: between the two measured sets (100% and 24%), leaving room for a tail of long
  texts (each is still read whole, in windows) but not for a corpus of documents.
Cost of the rule (one shared thread, not a quiet window): loading the tokenizer ~2 s, tokenizing 2,000
texts 0.3 s (tweets) to 2.2 s (e-mails).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ulmfit.errors import UlmfitError
from ulmfit.ranks import world_size
from ulmfit.recipes import registry

AUTO = registry.AUTO
AWD_LSTM = "awd_lstm"  # --backbone awd_lstm: the AWD-LSTM recipes (ulmfit, or siatl with --recipe siatl)
MINILM = "minilm"
TRANSFORMER = "transformer"  # the recipe of a transformer backbone (recipes/transformer_config.py)
SHORT_SHARE = 0.9  # texts count as short when at least this share fits one window (the evidence: above)
SAMPLE_TEXTS = 2_000  # a seeded sample of the training texts is tokenized, at most this many (~2 s)
# Word pieces per whitespace word, to estimate the share without the tokenizer (the extra missing):
# measured 1.97 on the tweets, 2.02 on the 40/55/5 tweets, 1.68 on the e-mails.
PIECES_PER_WORD = 2.0
# What the user gains, for the log line (docs/BENCHMARKS.md, test macro-F1, 3-seed medians).
GAIN = ("ULMFiT on MiniLM beat the AWD-LSTM at every label budget measured on tweets (500 labels: "
        "0.6707 vs 0.5852 test macro-F1; the 40/55/5 imbalanced tweets: 0.6026 vs 0.5103)")


def use_backbone(cfg, backbone: str):
    """`cfg` with the model of `--backbone NAME`: awd_lstm keeps an AWD-LSTM recipe (ulmfit, siatl,
    distill), else ulmfit (for "auto", or a --config naming the transformer); anything else runs the
    transformer recipe on that backbone (minilm or a Hugging Face folder), with SiATL's objective when
    the recipe was siatl."""
    if backbone == AWD_LSTM:
        if cfg.recipe in (AUTO, TRANSFORMER):
            cfg.recipe = registry.default_name()
        return cfg
    objective = "siatl" if cfg.recipe == "siatl" else "ulmfit"
    cfg.recipe = TRANSFORMER
    cfg.transformer = replace(cfg.transformer, backbone=backbone, objective=objective)
    return cfg


def model_chosen(cfg) -> str | None:
    """What in an "auto" config decides the model without the data (the AWD-LSTM), or None."""
    if str(cfg.pretrained) != "auto":
        return f"pretrained={cfg.pretrained!r} (an AWD-LSTM language model)"
    if cfg.direction != "fwd":
        return f"direction={cfg.direction!r} (the transformer recipe reads forward only)"
    if world_size() > 1:
        return "torchrun (only the ulmfit recipe runs data-parallel)"
    return None


def settle(cfg, resume: bool):
    """Before the data is read. A new run: `auto_choice` cleared (a config copied from an automatic
    run names its recipe: now the user's choice), and an "auto" recipe whose config decides the model
    (`model_chosen`) becomes the AWD-LSTM's. A resumed run keeps its saved recipe; a folder saved
    before recipes were recorded holds the AWD-LSTM's."""
    if resume:
        if cfg.recipe == AUTO:
            cfg.recipe = registry.default_name()
        return cfg
    cfg.auto_choice = None
    if cfg.recipe == AUTO and model_chosen(cfg):
        cfg.recipe = registry.default_name()
    return cfg


@dataclass(frozen=True)
class ShortShare:
    """How many of the sampled training texts fit one window: measured with the MiniLM tokenizer, or
    estimated from whitespace words (`PIECES_PER_WORD`) when the extra is missing."""

    fit: int
    sampled: int
    window: int
    measured: bool

    @property
    def share(self) -> float:
        return self.fit / max(self.sampled, 1)

    @property
    def short(self) -> bool:
        return self.share >= SHORT_SHARE

    def __str__(self) -> str:
        how = "fit" if self.measured else "fit (estimated from their words)"
        kind = "short texts" if self.short else "long texts"
        return (f"{self.fit:,} of {self.sampled:,} sampled training texts ({self.share:.0%}) {how} one "
                f"{self.window}-piece window: {kind} (short: at least {SHORT_SHARE:.0%})")


def sample(texts: Sequence[str], seed: int) -> list[str]:
    """A seeded sample of at most `SAMPLE_TEXTS` texts, in their order."""
    if len(texts) <= SAMPLE_TEXTS:
        return list(texts)
    return [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), SAMPLE_TEXTS))]


def minilm_tokenizer():
    """The MiniLM WordPiece pipeline, or the UlmfitError line saying what to install."""
    from ulmfit.models import transformer as T

    T.import_transformers()
    return T.WordPieceText.from_folder(T.resolve_transformer(MINILM))


def short_share(texts: Sequence[str], window: int, seed: int, tokenizer=None) -> ShortShare:
    """The share of (a seeded sample of) `texts` that fits one `window`: in word pieces of `tokenizer`
    (content pieces: window - 2, [CLS] and [SEP] aside), or estimated from words without one."""
    texts, room = sample(texts, seed), window - 2
    if tokenizer is not None:
        fit = sum(len(ids) <= room for ids in tokenizer.tokenize_many(texts))
    else:
        fit = sum(len(str(t).split()) * PIECES_PER_WORD <= room for t in texts)
    return ShortShare(fit, len(texts), window, tokenizer is not None)


def choose(cfg, texts: Sequence[str], log: Callable[[str], None]):
    """An "auto" config once the training texts are read: the transformer recipe on MiniLM for short
    texts when the extra imports, else the AWD-LSTM ulmfit recipe; `auto_choice` records why (saved in
    config.json, named in report.md), and one log line says which, why, and how to choose the other."""
    from ulmfit.models.transformer import INSTALL_HINT

    window = cfg.transformer.window
    try:
        tokenizer, missing = minilm_tokenizer(), None
    except UlmfitError:  # models/transformer.py's line: the extra or the MiniLM package is not installed
        tokenizer, missing = None, "the transformers extra is not installed"
    except Exception as e:  # an optional extra that is broken must not stop the default run: say so, go on
        tokenizer, missing = None, f"the transformers extra does not load ({type(e).__name__}: {e})"
    share = short_share(texts, window, cfg.seed, tokenizer)
    if tokenizer is not None and share.short:
        cfg = use_backbone(cfg, MINILM)
        cfg.auto_choice = f"MiniLM (ULMFiT on all-MiniLM-L6-v2), {share}"
        log(f"backbone: {cfg.auto_choice}. On short texts {GAIN}. Nothing chose the model: --backbone awd_lstm "
            f"gives the AWD-LSTM (25-40x faster prediction), and `ulmfit distill` can turn this model into one later")
        return cfg
    cfg.recipe = registry.default_name()
    if missing is not None:
        cfg.auto_choice = f"AWD-LSTM, {missing}; {share}"
        gain = f". On short texts {GAIN}: {INSTALL_HINT}, and fit chooses it" if share.short else ""
        log(f"backbone: {cfg.auto_choice}{gain}")
        return cfg
    cfg.auto_choice = f"AWD-LSTM, {share}"
    log(f"backbone: {cfg.auto_choice}. On long documents the AWD-LSTM reads whole texts and beat MiniLM at 500 labels "
        f"of e-mail (0.9682 vs 0.9531 test macro-F1), with 25-40x faster prediction. Nothing chose the model: "
        f"--backbone minilm gives MiniLM")
    return cfg
