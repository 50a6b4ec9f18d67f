"""Which language-model epoch the LM phase keeps (`lm.metric`, docs/GUIDE.md "Stopping LM
fine-tuning"), and `finetune_lm(keep_epochs=True)` keeping every epoch's weights."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ulmfit.errors import UlmfitError
from ulmfit.recipes import ulmfit as recipe
from ulmfit.recipes.config import FitConfig, LMTrainConfig, apply_overrides
from ulmfit.recipes.model_dir import load_lm, write_marker
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.train.checkpoint import load_weights
from ulmfit.train.tasks import LMTask

from conftest import make_rows, tiny_fit_config

# The seed user's case: validation loss bottoms out at epoch 1 and rises, while next-word accuracy
# keeps improving to the last epoch (4 unfrozen epochs, no pretrained LM: no frozen epoch).
SCRIPTED = [{"valid_loss": 5.0, "accuracy": 0.10}, {"valid_loss": 4.0, "accuracy": 0.20},
            {"valid_loss": 4.5, "accuracy": 0.25}, {"valid_loss": 4.8, "accuracy": 0.30}]


class ScriptedLMTask(LMTask):
    """The real LM training step; validation figures scripted, so the selection rule is what is tested."""

    calls = 0

    def evaluate(self, model, loader) -> dict:
        m = dict(SCRIPTED[ScriptedLMTask.calls])
        ScriptedLMTask.calls += 1
        return {**m, "perplexity": float(torch.tensor(m["valid_loss"]).exp())}


def finetune(tmp_path, monkeypatch, **lm_fields):
    ScriptedLMTask.calls = 0
    monkeypatch.setattr(recipe, "LMTask", ScriptedLMTask)
    cfg = replace(tiny_fit_config().lm, **{"patience": None, **lm_fields})
    tokens = Tokenizer(TokenizerConfig()).tokenize_many(make_rows(40, 0)["text"].tolist())
    res = recipe.finetune_lm(tokens, tmp_path, cfg, tokenizer=Tokenizer(TokenizerConfig()), keep_epochs=True)
    return res


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("metric,kept", [("valid_loss", 1), ("accuracy", 3)])
def test_lm_phase_keeps_the_epoch_its_metric_picks(tmp_path, monkeypatch, metric, kept):
    res = finetune(tmp_path, monkeypatch, metric=metric)
    assert [r["epoch"] for r in res.history] == [0, 1, 2, 3]
    snaps = {e: load_weights(tmp_path / "epochs" / f"lm-epoch{e}.safetensors") for e in range(4)}
    assert not same_weights(snaps[1], snaps[3])  # every epoch's weights, not one file rewritten
    write_marker(tmp_path, "lm", direction="fwd")
    saved, _, _ = load_lm(tmp_path)
    assert same_weights(saved.state_dict(), snaps[kept])
    assert same_weights(res.lm.state_dict(), snaps[kept])
    assert [r["best"] for r in res.history] == ([True, True, False, False] if metric == "valid_loss" else [True] * 4)


def test_default_keeps_the_later_epoch_where_loss_rises_but_accuracy_improves(tmp_path, monkeypatch):
    # the measured answer (docs/GUIDE.md "Stopping LM fine-tuning"): keep the accuracy-best epoch
    ScriptedLMTask.calls = 0
    monkeypatch.setattr(recipe, "LMTask", ScriptedLMTask)
    tokens = Tokenizer(TokenizerConfig()).tokenize_many(make_rows(40, 0)["text"].tolist())
    cfg = replace(FitConfig(pretrained=None).lm, preset="tiny", epochs=4, bs=8, bptt=12, min_freq=1, lr=3e-2,
                  valid_frac=0.1, patience=None)  # the library's lm section, sized down; metric untouched
    res = recipe.finetune_lm(tokens, tmp_path, cfg, tokenizer=Tokenizer(TokenizerConfig()), keep_epochs=True)
    assert same_weights(res.lm.state_dict(), load_weights(tmp_path / "epochs" / "lm-epoch3.safetensors"))
    assert not same_weights(res.lm.state_dict(), load_weights(tmp_path / "epochs" / "lm-epoch1.safetensors"))


def test_accuracy_early_stopping_follows_accuracy_not_loss(tmp_path, monkeypatch):
    # patience 1: on valid_loss the phase stops after epoch 2 (loss rose); on accuracy it runs on
    res = finetune(tmp_path, monkeypatch, metric="valid_loss", patience=1)
    assert [r["epoch"] for r in res.history] == [0, 1, 2]
    res = finetune(tmp_path / "acc", monkeypatch, metric="accuracy", patience=1)
    assert [r["epoch"] for r in res.history] == [0, 1, 2, 3]


def test_without_keep_epochs_no_epoch_files(tmp_path, monkeypatch):
    ScriptedLMTask.calls = 0
    monkeypatch.setattr(recipe, "LMTask", ScriptedLMTask)
    tokens = Tokenizer(TokenizerConfig()).tokenize_many(make_rows(40, 0)["text"].tolist())
    recipe.finetune_lm(tokens, tmp_path, replace(tiny_fit_config().lm, patience=None),
                       tokenizer=Tokenizer(TokenizerConfig()))
    assert not (tmp_path / "epochs").exists()


def test_lm_metric_is_checked_at_the_door():
    with pytest.raises(UlmfitError, match=r"lm.metric='macro_f1'.*valid_loss, accuracy"):
        LMTrainConfig(metric="macro_f1")
    cfg = apply_overrides(FitConfig(pretrained=None), ["lm.metric=accuracy"])
    assert cfg.lm.metric == "accuracy"
    assert FitConfig.from_dict(cfg.to_dict()).lm.metric == "accuracy"
