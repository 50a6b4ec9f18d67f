"""Shared fixtures: a tiny synthetic labelled data set and a tiny training config.

Real data sets are used by the demo and the benchmarks; unit tests need seconds, so they use
made-up sentences whose words carry the label, which even a tiny model learns in a few epochs.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import replace

import pandas as pd
import pytest
import torch

torch.set_num_threads(1)

WORDS = {
    "pos": ["great", "love", "wonderful", "happy", "excellent", "nice", "thanks"],
    "neg": ["awful", "hate", "terrible", "sad", "worst", "delayed", "rude"],
    "neu": ["flight", "tomorrow", "gate", "seat", "schedule", "boston", "monday"],
}
FILLER = ["the", "a", "my", "was", "is", "today", "this", "at", "with", "and", "I", "We", "!", "."]


@pytest.fixture
def killed_after_first_epoch(monkeypatch):
    """A context manager: inside it the training loop raises KeyboardInterrupt right after writing its
    first history record (a kill between epochs), which the block must meet; the loop is restored on exit."""
    from ulmfit.train import loop

    @contextmanager
    def kill():
        real, calls = loop.append_jsonl, {"n": 0}

        def crash_after_first_epoch(path, rec):
            calls["n"] += 1
            real(path, rec)
            if calls["n"] == 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(loop, "append_jsonl", crash_after_first_epoch)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(loop, "append_jsonl", real)
    return kill


def make_rows(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["pos", "neg", "neu"][i % 3]
        words = [rng.choice(WORDS[label]) for _ in range(rng.randint(2, 4))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(3, 12))]
        rng.shuffle(words)
        text = " ".join(words)
        rows.append({"text": text[0].upper() + text[1:], "label": label})
    return pd.DataFrame(rows)


@pytest.fixture
def tiny_data(tmp_path):
    """train.csv (150 rows), valid.csv (45), test.csv (45) with columns text,label."""
    paths = {}
    for name, n, seed in (("train", 150, 0), ("valid", 45, 1), ("test", 45, 2)):
        paths[name] = tmp_path / f"{name}.csv"
        make_rows(n, seed).to_csv(paths[name], index=False)
    return paths


def tiny_fit_config():
    from ulmfit.recipes.config import FitConfig

    # the AWD-LSTM ULMFiT recipe, pinned (the default "auto" chooses from the data: tests/test_auto_backbone.py);
    # tests do not depend on a shipped model being installed
    cfg = FitConfig(pretrained=None, recipe="ulmfit")
    cfg.lm = replace(cfg.lm, preset="tiny", epochs=4, bs=8, bptt=12, min_freq=1, lr=3e-2, valid_frac=0.1)
    cfg.clf = replace(cfg.clf, bs=16, bptt=8, pool_len=64, epochs=(1, 1, 1, 12), lrs=(3e-2, 3e-2, 3e-2, 2e-2), patience=None,
                      lin_sizes=(16,), min_steps_per_epoch=0,
                      cv="off")  # the suite's tiny validation splits would all cross-validate (tests/test_crossval.py does)
    return cfg


@pytest.fixture
def tiny_config():
    return tiny_fit_config()


# The hostile-input suite (tests/test_hostile.py) counts its cases here; the summary prints "N of N clean".
HOSTILE = {"total": 0, "clean": 0}


def pytest_terminal_summary(terminalreporter):
    if HOSTILE["total"]:
        terminalreporter.write_line(f"hostile input: {HOSTILE['clean']} of {HOSTILE['total']} clean "
                                    "(exit 2, one error line naming the thing and the fix, no traceback, files unchanged)")


def small_run(folder, n_train: int, lm_epochs: int, clf_epochs: tuple[int, ...]) -> list:
    """train.csv, valid.csv and a tiny config in `folder`; returns the `fit` arguments that use them."""
    from ulmfit.fileio import atomic_write_json

    make_rows(n_train, 0).to_csv(folder / "train.csv", index=False)
    make_rows(30, 1).to_csv(folder / "valid.csv", index=False)
    cfg = tiny_fit_config()
    cfg.lm = replace(cfg.lm, epochs=lm_epochs)
    cfg.clf = replace(cfg.clf, epochs=clf_epochs)
    atomic_write_json(folder / "tiny.json", cfg.to_dict())
    return ["--train", folder / "train.csv", "--valid", folder / "valid.csv", "--pretrained", "none",
            "--config", folder / "tiny.json"]
