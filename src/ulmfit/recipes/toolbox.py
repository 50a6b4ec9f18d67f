"""The toolbox every recipe shares: the language model a run starts from (pretrained and mapped
onto the run's vocabulary, or new), the texts tokenized once per tokenizer, seeding and logging.

recipes/ulmfit.py (ULMFiT's two phases) and recipes/siatl.py (SiATL) build on it; so does
`ulmfit pretrain` (`subsample_tokens`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ulmfit.errors import UlmfitError
from ulmfit.models.adaptive_softmax import adaptive_cutoffs
from ulmfit.models.awd_lstm import PRESETS, AWDLSTMConfig, LanguageModel
from ulmfit.models.vocab_transfer import transfer_vocab
from ulmfit.recipes import model_dir
from ulmfit.recipes.config import LMTrainConfig
from ulmfit.text.token_docs import TokenDocs
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab

Log = Callable[[str], None]


@dataclass
class LMResult:
    lm: LanguageModel
    config: AWDLSTMConfig
    tokenizer: Tokenizer
    vocab: Vocab
    history: list


def quiet(msg: str) -> None:
    """The default `log`: say nothing."""
    pass


def seed_all(seed: int) -> None:
    """Seed torch and NumPy at the start of a phase, so a run repeats from its config."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def load_pretrained(name: str | Path, log: Log) -> tuple[LanguageModel, Tokenizer, Vocab]:
    path = model_dir.resolve_pretrained(name)
    lm, tok, vocab = model_dir.load_lm(path)
    log(f"pretrained LM: {path} (vocab {len(vocab)}, {sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters)")
    return lm, tok, vocab


def output_layer(cfg, vocab_size: int) -> dict:
    """The LM's output-layer fields of AWDLSTMConfig from a section with `softmax` / `cutoffs`
    (LMTrainConfig, PretrainConfig): the cutoffs that fall inside this vocabulary."""
    cutoffs = adaptive_cutoffs(cfg.cutoffs, vocab_size) if cfg.softmax == "adaptive" else ()
    return {"softmax": "adaptive" if cutoffs else "full", "cutoffs": cutoffs}


def lm_from_pretrained(pretrained: LanguageModel, old_vocab: Vocab, new_vocab: Vocab, cfg: LMTrainConfig,
                       log: Log, source: str | Path = "the pretrained LM") -> tuple[LanguageModel, AWDLSTMConfig]:
    """The pretrained LM re-sized to `new_vocab` (shared words keep their rows), with this run's
    dropouts and output layer (`cfg.softmax`, `cfg.cutoffs`). Word rows and biases follow the
    embedding whatever the heads (an adaptive head's biases in their full-softmax form,
    models/adaptive_softmax.py `full_bias`). Into an adaptive head: its cluster vectors and
    projections are kept when the cutoffs inside the new vocabulary are the pretrained head's, else
    (and from a full softmax) the cluster logits start from the words' rows (`init_clusters`).
    Adaptive -> full keeps the rows and biases and drops the cluster parameters (exact at h = 0 only)."""
    base = pretrained.encoder.cfg if hasattr(pretrained.encoder, "cfg") else pretrained.cfg
    old_head, head = pretrained.cfg, output_layer(cfg, len(new_vocab))
    lm_cfg = replace(base, vocab_size=len(new_vocab), drop_mult=cfg.drop_mult, **head)
    sd = pretrained.state_dict()
    if old_head.softmax == "adaptive":
        sd = {k: v for k, v in sd.items() if k not in _CLUSTER_KEYS or lm_cfg.cutoffs == old_head.cutoffs}
        sd["decoder.bias"] = pretrained.decoder.full_bias()
    state, found = transfer_vocab(sd, old_vocab.itos, new_vocab.itos,
                                  embedding_keys=tuple(k for k in sd if _is_vocab_matrix(k)),
                                  bias_keys=tuple(k for k in sd if k.endswith("decoder.bias")))
    log(f"vocabulary transfer: {found}/{len(new_vocab)} target tokens found in the pretrained vocabulary "
        f"({100 * found / len(new_vocab):.1f}%); the rest start at the mean embedding")
    lm = LanguageModel(lm_cfg)
    missing, unexpected = lm.load_state_dict(state, strict=False)
    if set(missing) - set(_CLUSTER_KEYS) or unexpected:
        raise UlmfitError(f"{source}: its weights do not fit a {lm_cfg.softmax}-softmax LM (missing {missing}, "
                          f"unexpected {unexpected}); retrain it or restore the folder")
    was = "a full softmax" if old_head.softmax == "full" else f"an adaptive softmax, cutoffs {list(old_head.cutoffs)}"
    if missing:
        lm.decoder.init_clusters()
        log(f"adaptive softmax, cutoffs {list(lm_cfg.cutoffs)}: cluster logits from the transferred word rows and "
            f"biases, projections at identity (the pretrained LM had {was})")
    elif old_head.softmax == "adaptive" and lm_cfg.softmax == "full":
        log(f"full softmax from {was}: word rows and biases kept, its cluster vectors and projections dropped "
            f"(the same distribution at h = 0 only; --set lm.softmax=adaptive keeps them)")
    return lm, lm_cfg


_CLUSTER_KEYS = ("decoder.cluster_weight", "decoder.cluster_bias", "decoder.proj")


def scratch_lm(vocab: Vocab, cfg: LMTrainConfig) -> tuple[LanguageModel, AWDLSTMConfig]:
    """A new, untrained LM of size `cfg.preset` for `vocab`, with the section's output layer."""
    if cfg.preset not in PRESETS:
        raise UlmfitError(f"unknown model preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    lm_cfg = AWDLSTMConfig(vocab_size=len(vocab), drop_mult=cfg.drop_mult, **PRESETS[cfg.preset],
                           **output_layer(cfg, len(vocab)))
    return LanguageModel(lm_cfg), lm_cfg


def _is_vocab_matrix(key: str) -> bool:
    return key.endswith("embedding.weight") or key.endswith("decoder.weight")


def subsample_tokens(docs: TokenDocs, max_tokens: int | None, seed: int) -> TokenDocs:
    if not max_tokens or docs.n_tokens <= max_tokens:
        return docs
    order = np.random.default_rng(seed).permutation(len(docs))
    keep = order[: int(np.searchsorted(np.cumsum(docs.lengths[order]), max_tokens)) + 1]
    return docs.subset(np.sort(keep))


def target_vocab(token_lists: list[list[str]], cfg: LMTrainConfig, pretrained: Path | None) -> Vocab:
    """The run's vocabulary, from its own text: `Vocab.build` with `lm.min_freq` and `lm.max_vocab`,
    the pretrained LM's words kept from `lm.known_min_freq` occurrences when that is set."""
    known = (model_dir.load_text_pipeline(pretrained)[1].itos
             if pretrained is not None and cfg.known_min_freq is not None else ())
    return Vocab.build(token_lists, cfg.min_freq, cfg.max_vocab, known, cfg.known_min_freq)


def language_model(pretrained: Path | None, vocab: Vocab, cfg: LMTrainConfig, log: Log) -> tuple[LanguageModel, AWDLSTMConfig]:
    """The run's starting LM on `vocab`: the pretrained one (folder `pretrained`) with its rows
    mapped onto `vocab`, or a new one of size `cfg.preset` when `pretrained` is None."""
    if pretrained is None:
        return scratch_lm(vocab, cfg)
    pre_lm, _, pre_vocab = load_pretrained(pretrained, log)
    return lm_from_pretrained(pre_lm, pre_vocab, vocab, cfg, log, source=pretrained)


@dataclass
class Tokens:
    tokenizer: Tokenizer
    lm: list[list[str]]  # the training texts first, then the unlabelled ones
    valid: list[list[str]]


def tokens_for(pretrained: Path | None, data, cache: dict, log: Log) -> Tokens:
    """The texts of `data` (recipes/prepare.py FitData) tokenized by the pretrained LM's tokenizer,
    once per distinct tokenizer config (the two directions of a run normally share it)."""
    tokenizer = model_dir.load_text_pipeline(pretrained)[0] if pretrained else Tokenizer(TokenizerConfig())
    key = json.dumps(asdict(tokenizer.config), sort_keys=True)
    if key not in cache:
        t0 = time.perf_counter()
        lm_tokens = tokenizer.tokenize_many(data.train.texts + data.unlabeled)
        cache[key] = Tokens(tokenizer, lm_tokens, tokenizer.tokenize_many(data.valid.texts))
        log(f"tokenized {len(lm_tokens):,} documents for the language model ({sum(map(len, lm_tokens)):,} tokens) "
            f"in {time.perf_counter() - t0:.1f}s")
    return cache[key]
