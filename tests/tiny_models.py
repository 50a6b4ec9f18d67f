"""Tiny untrained model folders for serving and export tests: built in milliseconds, no training.

Weights are random, BatchNorm running statistics too (so the head is not the identity), and the
classifier reads short chunks (bptt 5) and pools only the last 12 tokens, so a 30-token text goes
through several chunks and the max_len cut-off, as long documents do with the real settings.
"""
from __future__ import annotations

from pathlib import Path

import torch

from conftest import make_rows

CLASSES = ["neg", "neu", "pos"]


def _pipeline():
    from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
    from ulmfit.text.vocab import Vocab

    tok = Tokenizer(TokenizerConfig())
    vocab = Vocab.build(tok.tokenize_many(make_rows(60, 0).text.tolist()), min_freq=1, max_vocab=1000)
    return tok, vocab


def _one(folder: Path, direction: str, directions: list[str], seed: int, bptt: int, max_len: int) -> None:
    from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
    from ulmfit.models.classifier import ClassifierConfig, TextClassifier
    from ulmfit.recipes import model_dir

    torch.manual_seed(seed)
    tok, vocab = _pipeline()
    cfg = AWDLSTMConfig.preset("tiny", vocab_size=len(vocab))
    lm = LanguageModel(cfg)
    clf = TextClassifier(lm.encoder, ClassifierConfig(n_classes=len(CLASSES), lin_sizes=(16,), bptt=bptt, max_len=max_len))
    with torch.no_grad():
        for m in clf.head.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    folder.mkdir(parents=True, exist_ok=True)
    model_dir.save_text_pipeline(folder, tok.config, vocab)
    model_dir.save_lm(folder, lm, cfg)
    model_dir.save_classifier(folder, clf, cfg, clf.cfg)
    model_dir.write_marker(folder, "classifier", classes=CLASSES, recipe="ulmfit", metric="macro_f1",
                           direction=direction, directions=directions)


def tiny_classifier_folder(folder: Path, both: bool = False, bptt: int = 5, max_len: int = 12, seed: int = 0) -> Path:
    """A classifier model folder (forward; with both=True also a backward model in folder/bwd)."""
    dirs = ["fwd", "bwd"] if both else ["fwd"]
    _one(folder, "fwd", dirs, seed, bptt, max_len)
    if both:
        _one(folder / "bwd", "bwd", ["bwd"], seed + 1, bptt, max_len)
    return folder
