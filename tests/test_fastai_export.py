"""Exporting a ulmfit LM to fastai's format: key names and order, itos, and the round trip
export -> import_fastai giving the same logits (a tiny model, well under a second)."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
from ulmfit.recipes import model_dir
from ulmfit.recipes.fastai_export import export_fastai
from ulmfit.recipes.fastai_import import import_fastai
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig
from ulmfit.text.vocab import Vocab

WORDS = ["the", ",", ".", "of", "and", "in", "to", "a", "was", "flight", "late", "great", "hate"]
LAYERS = 3


def make_lm_folder(folder, seed=0, tie=True, direction=None):
    itos = SPECIAL_TOKENS + WORDS
    itos += [f"xxfake{i}" for i in range(-len(itos) % 8)]
    vocab = Vocab(itos)
    torch.manual_seed(seed)
    cfg = AWDLSTMConfig(vocab_size=len(vocab), emb_size=8, hidden_size=12, n_layers=LAYERS, tie_weights=tie)
    lm = LanguageModel(cfg)
    with torch.no_grad():  # non-zero biases, so a lost or shuffled bias shows in the logits
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder.mkdir(parents=True)
    model_dir.save_text_pipeline(folder, TokenizerConfig(), vocab)
    model_dir.save_lm(folder, lm, cfg)
    model_dir.write_marker(folder, "lm", **({"direction": direction} if direction else {}))
    return lm.eval(), vocab


def logits(lm, ids):
    with torch.no_grad():
        return lm(torch.tensor(ids))[0]


IDS = [[2, 9, 10, 11, 12, 13, 14, 0], [2, 20, 5, 5, 17, 8, 7, 1]]


def test_keys_in_fastai_order_and_itos(tmp_path):
    make_lm_folder(tmp_path / "lm")
    pth = export_fastai(tmp_path / "lm", tmp_path / "fa", log=lambda m: None)
    assert pth.name == "lstm_fwd.pth"
    sd = torch.load(pth, weights_only=True)
    expected = ["0.encoder.weight", "0.encoder_dp.emb.weight"]
    for i in range(LAYERS):
        expected += [f"0.rnns.{i}.weight_hh_l0_raw", f"0.rnns.{i}.module.weight_ih_l0",
                     f"0.rnns.{i}.module.bias_ih_l0", f"0.rnns.{i}.module.bias_hh_l0"]
    expected += ["1.decoder.weight", "1.decoder.bias"]
    assert list(sd) == expected  # fastai's load_pretrained copies weights by key position
    assert torch.equal(sd["0.encoder.weight"], sd["0.encoder_dp.emb.weight"])
    assert torch.equal(sd["0.encoder.weight"], sd["1.decoder.weight"])
    with open(tmp_path / "fa" / "itos.pkl", "rb") as f:
        itos = pickle.load(f)
    assert itos[:9] == ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
    assert itos[9:9 + len(WORDS)] == WORDS and set(itos[9 + len(WORDS):]) == {"xxfake"}
    assert len(itos) == sd["0.encoder.weight"].shape[0]
    cfg = json.loads((tmp_path / "fa" / "fastai_config.json").read_text())
    assert (cfg["emb_sz"], cfg["n_hid"], cfg["n_layers"]) == (8, 12, LAYERS)


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_gives_identical_logits(tmp_path, tie):
    lm, vocab = make_lm_folder(tmp_path / "lm", tie=tie)
    pth = export_fastai(tmp_path / "lm", tmp_path / "fa", log=lambda m: None)
    import_fastai(pth, tmp_path / "back", itos=tmp_path / "fa" / "itos.pkl", log=lambda m: None)
    lm2, _, vocab2 = model_dir.load_lm(tmp_path / "back")
    assert vocab2.itos == vocab.itos
    assert lm2.cfg.tie_weights == tie
    assert torch.equal(logits(lm, IDS), logits(lm2, IDS))


def test_backward_model_named_bwd(tmp_path):
    make_lm_folder(tmp_path / "lm", direction="bwd")
    pth = export_fastai(tmp_path / "lm", tmp_path / "fa", log=lambda m: None)
    assert pth.name == "lstm_bwd.pth"
    assert json.loads((tmp_path / "fa" / "fastai_config.json").read_text())["direction"] == "bwd"


def test_refuses_to_overwrite_and_non_model(tmp_path):
    make_lm_folder(tmp_path / "lm")
    export_fastai(tmp_path / "lm", tmp_path / "fa", log=lambda m: None)
    with pytest.raises(UlmfitError, match="exists"):
        export_fastai(tmp_path / "lm", tmp_path / "fa", log=lambda m: None)
    export_fastai(tmp_path / "lm", tmp_path / "fa", overwrite=True, log=lambda m: None)
    with pytest.raises(UlmfitError):
        export_fastai(tmp_path / "nothing", tmp_path / "fa2", log=lambda m: None)
