"""Bidirectional ULMFiT: backward models read every document reversed (LM and classifier batches,
prediction), `--direction both` trains both into one folder and averages their probabilities,
resumes after the forward half, and pretrained LMs must match the direction."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ulmfit.cli import main
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json
from ulmfit.recipes import fit as fit_module
from ulmfit.recipes import ulmfit as recipe
from ulmfit.text.tokenize import PAD_ID, Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab

from conftest import make_rows, tiny_fit_config


class Stop(Exception):
    pass


def small_config(direction="both"):
    cfg = tiny_fit_config()
    cfg.direction = direction
    cfg.lm.epochs = 1
    cfg.clf.epochs, cfg.clf.lrs = (1, 2), (3e-2, 2e-2)
    return cfg


def token_lists(n=20):
    return Tokenizer(TokenizerConfig()).tokenize_many(make_rows(n, 0)["text"].tolist())


def train_tiny_classifier(out, clf=None, **kw):
    """`train_classifier` on 20 tiny rows from a scratch LM (the rows as train and valid); returns (tokens, vocab)."""
    from ulmfit.recipes.prepare import Labelled

    tokens = token_lists()
    vocab = Vocab.build(tokens, min_freq=1)
    cfg = tiny_fit_config()
    lm, lm_cfg = recipe.scratch_lm(vocab, cfg.lm)
    data = Labelled([" ".join(t) for t in tokens], np.arange(len(tokens)) % 3, "t")
    recipe.train_classifier(recipe.LMResult(lm, lm_cfg, Tokenizer(TokenizerConfig()), vocab, []), data, data,
                            ["a", "b", "c"], out, clf or cfg.clf, train_tokens=tokens, valid_tokens=tokens, **kw)
    return tokens, vocab


def test_backward_lm_reads_each_document_reversed(tmp_path, monkeypatch):
    tokens = token_lists()
    vocab = Vocab.build(tokens, min_freq=1)
    seen = []

    def capture(docs, **kw):
        seen.extend(tuple(docs[i].tolist()) for i in range(len(docs)))
        if len(seen) == len(tokens):  # train + valid loaders built: stop before training
            raise Stop

    monkeypatch.setattr(recipe, "LMLoader", capture)
    with pytest.raises(Stop):
        recipe.finetune_lm(tokens, tmp_path, tiny_fit_config().lm, tokenizer=Tokenizer(TokenizerConfig()), vocab=vocab,
                           direction="bwd")
    forward = [tuple(vocab.numericalize(t).tolist()) for t in tokens]
    assert sorted(seen) == sorted(f[::-1] for f in forward)  # per document, never the whole stream
    assert all(doc[-1] == vocab.stoi["xxbos"] for doc in seen)


def test_backward_classifier_batches_are_reversed_and_right_padded(tmp_path, monkeypatch):
    loaders = []
    real = recipe.ClassificationLoader

    def capture(*a, **kw):
        loaders.append(real(*a, **kw))
        return loaders[-1]

    def stop(*a, **kw):
        raise Stop

    monkeypatch.setattr(recipe, "ClassificationLoader", capture)
    monkeypatch.setattr(recipe, "run_phase", stop)
    with pytest.raises(Stop):
        train_tiny_classifier(tmp_path, direction="bwd")
    tokens = token_lists()
    vocab = Vocab.build(tokens, min_freq=1)
    forward = [vocab.numericalize(t) for t in tokens]
    for loader in loaders:
        batch = next(iter(loader))
        assert len(set(batch.lengths.tolist())) > 1  # padding is exercised
        for row, n, i in zip(batch.ids, batch.lengths, batch.index):
            assert n == len(forward[i])  # lengths unchanged
            assert row[:n].tolist() == forward[i][::-1].tolist()
            assert (row[n:] == PAD_ID).all()  # padding still on the right


@pytest.mark.parametrize("factor", [2.6, 1.5])
def test_classifier_groups_train_at_the_configured_discriminative_factor(tmp_path, monkeypatch, factor):
    """`clf.lr_factor` reaches both the optimizer and the loop: in every stage each unfrozen group runs at the
    rate of the group above it divided by the factor (ULMFiT §3.2)."""
    from dataclasses import replace

    seen = []
    real = recipe.run_phase

    def spy(model, task, opt, groups, stages, *a, **kw):
        class Rates:  # after every epoch: the rate of each unfrozen layer group, lowest first
            def on_epoch_end(self, record):
                seen.append([lr for _, lr in sorted({g["layer"]: g["lr"] for g in opt.param_groups
                                                     if g["params"][0].requires_grad}.items())])
        kw["callbacks"] = tuple(kw.get("callbacks", ())) + (Rates(),)
        return real(model, task, opt, groups, stages, *a, **kw)

    monkeypatch.setattr(recipe, "run_phase", spy)
    clf = replace(tiny_fit_config().clf, epochs=(1, 1, 1), lrs=(3e-2, 2e-2, 1e-2), lr_factor=factor, schedule="constant")
    train_tiny_classifier(tmp_path, clf)
    assert [len(r) for r in seen][:2] == [1, 2] and len(seen[-1]) >= 4  # head; then one group more; then all
    for rates in seen[1:]:
        ratios = [hi / lo for lo, hi in zip(rates, rates[1:])]
        assert ratios and ratios == pytest.approx([factor] * len(ratios))


def test_backward_member_predicts_on_reversed_documents():
    from ulmfit.recipes.predictor import Member

    tokens = token_lists(6)
    vocab = Vocab.build(tokens, min_freq=1)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, ids, lengths):
            seen.extend((row[:n].tolist(), row[n:].tolist()) for row, n in zip(ids, lengths))
            return torch.zeros(len(ids), 2)

    Member("bwd", Tokenizer(TokenizerConfig()), vocab, Spy()).predict_proba(tokens, 2)
    expected = sorted(vocab.numericalize(t)[::-1].tolist() for t in tokens)
    assert sorted(r for r, _ in seen) == expected and all(set(p) <= {PAD_ID} for _, p in seen)


# ----------------------------------------------------------------------------- --direction both

@pytest.fixture(scope="module")
def both(tmp_path_factory):
    d = tmp_path_factory.mktemp("both")
    for name, n, seed in (("train", 150, 0), ("valid", 45, 1), ("test", 30, 2)):
        make_rows(n, seed).to_csv(d / f"{name}.csv", index=False)
    atomic_write_json(d / "tiny.json", small_config("fwd").to_dict())
    code = main([str(a) for a in ["fit", "--train", d / "train.csv", "--valid", d / "valid.csv", "--out", d / "model",
                                  "--config", d / "tiny.json", "--direction", "both", "--pretrained", "none"]])
    assert code == 0
    return d, d / "model"


@pytest.mark.slow
def test_both_writes_forward_in_place_and_backward_in_bwd(both):
    _, out = both
    for folder in (out, out / "bwd"):
        for name in ("ulmfit.json", "config.json", "vocab.json", "lm.safetensors", "classifier.safetensors",
                     "history.jsonl", "report.md", "valid_metrics.json"):
            assert (folder / name).exists(), folder / name
        assert not (folder / "checkpoints").exists()
    top, bwd = (json.loads((f / "ulmfit.json").read_text()) for f in (out, out / "bwd"))
    assert top["direction"] == "fwd" and top["directions"] == ["fwd", "bwd"]
    assert bwd["direction"] == "bwd" and bwd["directions"] == ["bwd"]
    metrics = json.loads((out / "valid_metrics.json").read_text())
    assert set(metrics["by_direction"]) == {"fwd", "bwd"} and "macro_f1" in metrics
    assert json.loads((out / "bwd" / "valid_metrics.json").read_text()) == metrics["by_direction"]["bwd"]
    report = (out / "report.md").read_text()
    assert "| fwd |" in report and "| bwd |" in report and "| averaged |" in report
    assert json.loads((out / "config.json").read_text())["direction"] == "both"


@pytest.mark.slow
def test_both_averages_the_two_models(both, capsys, tmp_path):
    import ulmfit
    from ulmfit.recipes.predictor import Member
    from ulmfit.train.calibration import apply

    d, out = both
    texts = pd.read_csv(d / "test.csv")["text"].tolist()
    model = ulmfit.load(out)
    tokens = model.tokenizer.tokenize_many(texts)
    fwd = Member.load(out, "fwd").predict_proba(tokens, 3)
    bwd = ulmfit.load(out / "bwd").predict_proba(texts)  # the backward sub-folder is a model of its own
    assert not np.allclose(fwd, bwd)
    raw = model.predict_proba_raw(texts)
    assert np.allclose(raw, (fwd + bwd) / 2, atol=1e-6)
    # the averaged model's calibration.json (temperature, decision rule) applies to the average
    probs, pred = apply(raw, model.calibration)
    assert np.allclose(model.predict_proba(texts), probs, atol=1e-6)
    assert model.predict(texts) == [model.classes[i] for i in pred]

    assert main([str(a) for a in ["predict", out, "--data", d / "test.csv", "--out", tmp_path / "p.csv"]]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert np.allclose(p[["p_neg", "p_neu", "p_pos"]].to_numpy(), probs, atol=1e-5)
    capsys.readouterr()
    assert main([str(a) for a in ["evaluate", out, "--data", d / "test.csv", "--json"]]) == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m["by_direction"]) == {"fwd", "bwd"}
    y = pd.read_csv(d / "test.csv")["label"].map({c: i for i, c in enumerate(model.classes)}).to_numpy()
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert main([str(a) for a in ["evaluate", out, "--data", d / "test.csv"]]) == 0
    assert "bwd model alone" in capsys.readouterr().out


@pytest.mark.slow
def test_generate_needs_a_forward_lm(both, capsys):
    _, out = both
    assert main(["generate", str(out / "bwd"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "backward" in err and err.count("\n") == 1
    assert main(["generate", str(out), "--prompt", "The flight", "--words", "3", "--seed", "0"]) == 0


@pytest.mark.slow
def test_both_resumes_without_retraining_the_forward_half(tmp_path, capsys, monkeypatch):
    from ulmfit.train import loop

    monkeypatch.setattr(fit_module, "plot_history", lambda *a, **k: None)
    make_rows(90, 0).to_csv(tmp_path / "train.csv", index=False)
    make_rows(30, 1).to_csv(tmp_path / "valid.csv", index=False)
    atomic_write_json(tmp_path / "tiny.json", small_config().to_dict())
    out = tmp_path / "model"
    real = loop.append_jsonl

    def interrupt_in_backward_classifier(path, record):
        if "bwd" in path.parts and record["phase"] == "classifier":
            raise KeyboardInterrupt
        real(path, record)

    monkeypatch.setattr(loop, "append_jsonl", interrupt_in_backward_classifier)
    code = main([str(a) for a in ["fit", "--train", tmp_path / "train.csv", "--valid", tmp_path / "valid.csv",
                                  "--out", out, "--config", tmp_path / "tiny.json"]])
    assert code == 130 and not (out / "ulmfit.json").exists()
    forward_log = (out / "history.jsonl").read_text()
    monkeypatch.setattr(loop, "append_jsonl", real)
    capsys.readouterr()
    assert main(["fit", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "forward model: already trained" in err and "forward language model" not in err
    assert (out / "history.jsonl").read_text() == forward_log  # nothing of the forward half ran again
    recs = [json.loads(l) for l in (out / "bwd" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["phase"] == "lm"] == [0]  # the backward LM was not trained again
    assert [r["epoch"] for r in recs if r["phase"] == "classifier"] == [0, 1, 2]
    assert json.loads((out / "ulmfit.json").read_text())["directions"] == ["fwd", "bwd"]


def test_bwd_alone_lives_in_the_top_folder(tmp_path, monkeypatch):
    import ulmfit

    monkeypatch.setattr(fit_module, "plot_history", lambda *a, **k: None)
    train, valid = make_rows(60, 0), make_rows(30, 1)
    model = ulmfit.fit(train, valid, out=tmp_path / "m", config=small_config("bwd"))
    meta = json.loads((tmp_path / "m" / "ulmfit.json").read_text())
    assert meta["direction"] == "bwd" and meta["directions"] == ["bwd"] and not (tmp_path / "m" / "bwd").exists()
    assert model.members[0].direction == "bwd" and model.predict_proba(["great flight"]).shape == (1, 3)


# ----------------------------------------------------------------------------- pretrained LMs per direction

def test_pretrain_bwd_marker_card_and_mismatch_errors(tmp_path, capsys):
    from test_pretrain import make_corpus

    corpus = make_corpus(tmp_path / "corpus", n_docs=60)
    code = main(["pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "lm"), "--preset", "tiny",
                 "--set", "epochs=1", "--set", "bs=4", "--set", "min_freq=1", "--set", "bptt=8", "--set", "direction=bwd"])
    assert code == 0
    meta = json.loads((tmp_path / "lm" / "ulmfit.json").read_text())
    assert meta["kind"] == "lm" and meta["direction"] == "bwd"
    card = (tmp_path / "lm" / "README.md").read_text()
    assert "backward" in card and "--set direction=bwd" in card
    ids = np.load(tmp_path / "lm" / "data" / "train" / "ids.npy")
    offsets = np.load(tmp_path / "lm" / "data" / "train" / "offsets.npy")
    assert ids[offsets[1] - 1] == 2  # each stored document ends with xxbos: written reversed

    make_rows(30, 0).to_csv(tmp_path / "t.csv", index=False)
    capsys.readouterr()
    code = main(["fit", "--train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--pretrained",
                 str(tmp_path / "lm")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(tmp_path / "lm") in err and "backward (bwd)" in err
    import shutil

    shutil.copytree(tmp_path / "lm", tmp_path / "fwd-lm", ignore=shutil.ignore_patterns("data"))
    (tmp_path / "fwd-lm" / "ulmfit.json").write_text(json.dumps({**meta, "direction": "fwd"}))
    code = main(["fit", "--train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--direction", "both",
                 "--pretrained", "none", "--pretrained-bwd", str(tmp_path / "fwd-lm")])
    err = capsys.readouterr().err
    assert code == 2 and f"--pretrained-bwd {tmp_path / 'fwd-lm'}" in err and "forward (fwd)" in err
    code = main(["fit", "--train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--pretrained-bwd", "none"])
    assert code == 2 and "--direction both" in capsys.readouterr().err
    assert not (tmp_path / "m" / "ulmfit.json").exists()


def test_direction_resolution_of_pretrained_settings(tmp_path, monkeypatch):
    from ulmfit.recipes import model_dir
    from ulmfit.recipes.config import FitConfig

    shipped = tmp_path / "pretrained"
    monkeypatch.setattr(model_dir, "SHIPPED", shipped)
    for name, direction in (("general-en", None), ("general-en-bwd", "bwd")):
        (shipped / name).mkdir(parents=True)
        marker = {"format": "ulmfit-model", "kind": "lm", **({"direction": direction} if direction else {})}
        (shipped / name / "ulmfit.json").write_text(json.dumps(marker))  # general-en: an old marker, no direction
    assert model_dir.resolve_pretrained("auto", "fwd") == shipped / "general-en"
    assert model_dir.resolve_pretrained("auto", "bwd") == shipped / "general-en-bwd"
    assert model_dir.resolve_pretrained("general-en-bwd", "bwd") == shipped / "general-en-bwd"
    with pytest.raises(UlmfitError, match="general-en-bwd.*backward \\(bwd\\).*reads forward"):
        model_dir.resolve_pretrained("general-en-bwd", "fwd")
    with pytest.raises(UlmfitError, match="--pretrained-bwd general-en: .*forward \\(fwd\\)"):
        FitConfig(direction="both", pretrained_bwd="general-en").resolved("bwd")
    cfg = FitConfig(direction="both")
    assert cfg.pretrained_for("fwd") == "auto" and cfg.resolved("bwd").lm.lr == 3e-3  # fine-tuning rates
    scratch = FitConfig(direction="both", pretrained=None)  # --pretrained none: no LM for either direction
    assert scratch.pretrained_for("bwd") is None and scratch.resolved("bwd").lm.lr == 2e-2
    assert FitConfig(direction="both", pretrained=None, pretrained_bwd="general-en-bwd").pretrained_for("bwd") == "general-en-bwd"
    with pytest.raises(UlmfitError, match="direction"):
        FitConfig(direction="sideways").directions


def test_siatl_rejects_other_directions(tmp_path, capsys):
    make_rows(30, 0).to_csv(tmp_path / "t.csv", index=False)
    code = main(["fit", "--train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--recipe", "siatl",
                 "--direction", "both"])
    err = capsys.readouterr().err
    assert code == 2 and "--recipe siatl supports --direction fwd only" in err and err.count("\n") == 1


def test_finetune_lm_backward_and_pretrain_resume_keeps_its_direction(tmp_path, capsys):
    from ulmfit.recipes import model_dir
    from ulmfit.recipes.pretrain import PretrainConfig, pretrain

    (tmp_path / "t.txt").write_text("\n".join(make_rows(40, 0)["text"]) + "\n")
    code = main(["finetune-lm", "--train", str(tmp_path / "t.txt"), "--out", str(tmp_path / "lm"), "--pretrained", "none",
                 "--direction", "bwd", "--set", "lm.preset=tiny", "--set", "lm.epochs=1", "--set", "lm.bs=4",
                 "--set", "lm.min_freq=1", "--set", "lm.bptt=8"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "lm" / "ulmfit.json").read_text())["direction"] == "bwd"
    assert model_dir.resolve_pretrained(str(tmp_path / "lm"), "bwd") == tmp_path / "lm"
    (tmp_path / "pt").mkdir()
    atomic_write_json(tmp_path / "pt" / "pretrain_config.json", {"direction": "fwd"})
    with pytest.raises(UlmfitError, match="interrupted fwd pretraining run"):
        pretrain(tmp_path / "corpus", tmp_path / "pt", PretrainConfig(direction="bwd"), resume=True, log=lambda m: None)
