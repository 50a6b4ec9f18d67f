"""The CLI end to end on a tiny data set, and every bad-input case: one clear line, exit code 2."""
from __future__ import annotations

import hashlib
import io
import json
import sys

import pandas as pd
import pytest

from ulmfit.cli import main
from ulmfit.fileio import atomic_write_json

from conftest import tiny_fit_config


def run_cli(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained through the CLI, shared by the read-only tests below."""
    from conftest import make_rows

    d = tmp_path_factory.mktemp("cli")
    for name, n, seed in (("train", 150, 0), ("valid", 45, 1), ("test", 45, 2)):
        make_rows(n, seed).to_csv(d / f"{name}.csv", index=False)
    cfg_path = d / "tiny.json"
    atomic_write_json(cfg_path, tiny_fit_config().to_dict())
    out = d / "model"
    code = main(["fit", "--train", str(d / "train.csv"), "--valid", str(d / "valid.csv"), "--text-col", "text",
                 "--label-col", "label", "--out", str(out), "--pretrained", "none", "--config", str(cfg_path)])
    assert code == 0
    return d, out


def folder_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_fit_writes_a_complete_model_folder(trained):
    _, out = trained
    for name in ("ulmfit.json", "config.json", "tokenizer.json", "vocab.json", "lm_config.json", "lm.safetensors",
                 "classifier_config.json", "classifier.safetensors", "history.jsonl", "history.png", "report.md"):
        assert (out / name).exists(), name
    assert not (out / "checkpoints").exists()
    meta = json.loads((out / "ulmfit.json").read_text())
    assert meta["kind"] == "classifier" and meta["classes"] == ["neg", "neu", "pos"]
    assert "macro" in (out / "report.md").read_text().lower()


@pytest.mark.slow
def test_evaluate_json_and_table(trained, capsys):
    d, out = trained
    code, stdout, _ = run_cli(["evaluate", out, "--data", d / "test.csv", "--json"], capsys)
    assert code == 0
    m = json.loads(stdout)
    assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(m)
    assert m["accuracy"] > 0.6, m  # the words carry the label: even the tiny model learns them
    code, stdout, _ = run_cli(["evaluate", out, "--data", d / "test.csv"], capsys)
    assert code == 0 and "neg" in stdout


@pytest.mark.slow
def test_predict_to_csv_and_from_stdin(trained, capsys, monkeypatch, tmp_path):
    d, out = trained
    code, _, _ = run_cli(["predict", out, "--data", d / "test.csv", "--out", tmp_path / "p.csv"], capsys)
    assert code == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["text", "label", "p_neg", "p_neu", "p_pos"] and len(p) == 45
    assert ((p[["p_neg", "p_neu", "p_pos"]].sum(axis=1) - 1).abs() < 1e-4).all()
    code, stdout, _ = run_cli(["predict", out], capsys, stdin="I love it, great\nterrible and rude\n",
                              monkeypatch=monkeypatch)
    assert code == 0
    assert len(pd.read_csv(io.StringIO(stdout))) == 2


@pytest.mark.slow
def test_api_and_cli_agree(trained):
    import ulmfit

    d, out = trained
    model = ulmfit.load(out)
    texts = pd.read_csv(d / "test.csv")["text"].tolist()
    probs = model.predict_proba(texts)
    assert probs.shape == (45, 3)
    # order of inputs is kept although batches are sorted by length inside
    single = model.predict_proba([texts[7]])
    assert abs(single - probs[7:8]).max() < 1e-5
    assert model.predict(texts[:3]) == model.predict_with_proba(texts[:3])[0]


@pytest.mark.slow
def test_generate_writes_text(trained, capsys):
    _, out = trained
    code, stdout, _ = run_cli(["generate", out, "--prompt", "The flight", "--words", "8", "--seed", "1"], capsys)
    assert code == 0
    assert stdout.lower().startswith("the flight") and len(stdout.split()) >= 8


@pytest.mark.slow
def test_refuses_to_overwrite_a_model_folder(trained, capsys):
    d, out = trained
    before = folder_digest(out)
    code, _, err = run_cli(["fit", "--train", d / "train.csv", "--out", out], capsys)
    assert code == 2 and "already holds a trained model" in err and "--overwrite" in err
    assert folder_digest(out) == before


@pytest.mark.slow
def test_evaluate_with_unseen_labels_fails_cleanly(trained, capsys, tmp_path):
    d, out = trained
    df = pd.read_csv(d / "test.csv")
    df.loc[3, "label"] = "angry"
    df.to_csv(tmp_path / "bad.csv", index=False)
    before = folder_digest(out)
    code, _, err = run_cli(["evaluate", out, "--data", tmp_path / "bad.csv"], capsys)
    assert code == 2 and "angry" in err and "never seen" in err and err.count("\n") == 1
    assert folder_digest(out) == before


@pytest.mark.slow
def test_model_folder_from_another_version(trained, capsys, tmp_path):
    import shutil

    _, out = trained
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "ulmfit.json").read_text())
    meta["version"] = 99
    (copy / "ulmfit.json").write_text(json.dumps(meta))
    code, _, err = run_cli(["predict", copy], capsys)
    assert code == 2 and "version 99" in err


def test_missing_model_folder(capsys, tmp_path):
    code, _, err = run_cli(["evaluate", tmp_path / "nope", "--data", tmp_path / "x.csv"], capsys)
    assert code == 2 and "nope" in err and "not found" in err


def test_not_a_model_folder(capsys, tmp_path):
    code, _, err = run_cli(["predict", tmp_path], capsys)
    assert code == 2 and "not a ulmfit model folder" in err


@pytest.mark.parametrize("case", ["missing_col", "empty_file", "blank_text", "one_class", "bad_bytes",
                                  "missing_file", "unseen_valid_label"])
def test_bad_training_input(case, tiny_data, tmp_path, capsys):
    train, valid = tiny_data["train"], tiny_data["valid"]
    args = ["--text-col", "text", "--label-col", "label"]
    expect = []
    if case == "missing_col":
        args = ["--text-col", "txt", "--label-col", "label"]
        expect = ["txt", "text", str(train)]
    elif case == "empty_file":
        train = tmp_path / "empty.csv"
        train.write_text("")
        expect = ["empty"]
    elif case == "blank_text":
        df = pd.read_csv(train)
        df.loc[4, "text"] = "   "
        train = tmp_path / "blank.csv"
        df.to_csv(train, index=False)
        expect = ["empty", "6"]  # data row 5 is line 6 of the file
    elif case == "one_class":
        df = pd.read_csv(train)
        df["label"] = "pos"
        train = tmp_path / "one.csv"
        df.to_csv(train, index=False)
        expect = ["one class"]
    elif case == "bad_bytes":
        train = tmp_path / "latin.csv"
        train.write_bytes("text,label\ncaf\xe9 au lait,pos\nnice day,neg\n".encode("latin-1"))
        expect = ["latin-1"]
    elif case == "missing_file":
        train = tmp_path / "nope.csv"
        expect = ["nope.csv"]
    elif case == "unseen_valid_label":
        df = pd.read_csv(valid)
        df.loc[0, "label"] = "mystery"
        valid = tmp_path / "v.csv"
        df.to_csv(valid, index=False)
        expect = ["mystery"]
    out = tmp_path / "model"
    code, _, err = run_cli(["fit", "--train", train, "--valid", valid, "--out", out, *args], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in expect:
        assert word.lower() in err.lower(), (word, err)
    assert not (out / "ulmfit.json").exists()


def test_set_override_errors(capsys, tiny_data, tmp_path):
    code, _, err = run_cli(["fit", "--train", tiny_data["train"], "--out", tmp_path / "m", "--set", "lm.epochz=3"],
                           capsys)
    assert code == 2 and "epochz" in err and "epochs" in err


@pytest.mark.slow
def test_fit_resume_after_interruption(tiny_data, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the classifier phase: exit 130 with a hint, then --resume finishes the run
    without re-training the language model, from the folder alone."""
    from ulmfit.train import loop

    cfg_path = tmp_path / "tiny.json"
    atomic_write_json(cfg_path, tiny_fit_config().to_dict())
    out = tmp_path / "model"
    real, seen = loop.append_jsonl, []

    def interrupt_in_classifier(path, record):
        seen.append(record["phase"])
        if record["phase"] == "classifier" and seen.count("classifier") == 2:
            raise KeyboardInterrupt
        real(path, record)

    monkeypatch.setattr(loop, "append_jsonl", interrupt_in_classifier)
    code, _, err = run_cli(["fit", "--train", tiny_data["train"], "--valid", tiny_data["valid"], "--out", out,
                            "--config", cfg_path], capsys)
    assert code == 130 and "--resume" in err
    assert not (out / "ulmfit.json").exists() and (out / "checkpoints").exists()
    code, _, err = run_cli(["fit", "--train", tiny_data["train"], "--out", out], capsys)
    assert code == 2 and "--resume" in err  # an interrupted run is not silently overwritten
    monkeypatch.setattr(loop, "append_jsonl", real)
    code, _, err = run_cli(["fit", "--out", out, "--resume"], capsys)
    assert code == 0, err
    recs = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines()]
    lm_epochs = [r["epoch"] for r in recs if r["phase"] == "lm"]
    clf_epochs = [r["epoch"] for r in recs if r["phase"] == "classifier"]
    assert lm_epochs == list(range(len(lm_epochs)))  # the LM was not trained again
    assert clf_epochs == list(range(15))  # 1 + 1 + 1 + 12 classifier epochs, none twice
    assert json.loads((out / "ulmfit.json").read_text())["kind"] == "classifier"


@pytest.mark.slow
def test_finetune_lm_then_lr_find_for_lm_and_classifier(tiny_data, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(pd.read_csv(tiny_data["train"])["text"]) + "\n")
    overrides = ["--set", "lm.preset=tiny", "--set", "lm.epochs=1", "--set", "lm.bs=8", "--set", "lm.min_freq=1",
                 "--set", "lm.bptt=12", "--set", "clf.bs=16"]
    code, _, err = run_cli(["finetune-lm", "--train", texts, "--out", tmp_path / "lm", "--pretrained", "none",
                            "--keep-epochs", *overrides], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "lm" / "ulmfit.json").read_text())["kind"] == "lm"
    assert (tmp_path / "lm" / "epochs" / "lm-epoch0.safetensors").exists()  # --keep-epochs (the folder stays usable)
    code, out, err = run_cli(["lr-find", "--train", tiny_data["train"], "--out", tmp_path / "lrf", "--iters", "30",
                              *overrides], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "lrf" / "lr_find.json").read_text())
    assert 1e-7 <= summary["suggestion"] <= 10 and "suggested learning rate" in out
    assert (tmp_path / "lrf" / "lr_find.png").stat().st_size > 1000
    code, out, err = run_cli(["lr-find", "--train", tiny_data["train"], "--label-col", "label", "--encoder",
                              tmp_path / "lm", "--out", tmp_path / "lrc", "--iters", "20", *overrides], capsys)
    assert code == 0, err
    assert "classifier" in err and (tmp_path / "lrc" / "lr_find.json").exists()


def test_fit_recipe_siatl_hands_prepared_data_to_siatl(tiny_data, tmp_path, capsys, monkeypatch):
    """`--recipe siatl`: fit prepares tables, the low-resource sample, the unlabelled text, the vocabulary and
    the (not fine-tuned) LM, then calls recipes/siatl.py (here a stand-in module); prediction loads its model."""
    import types

    from ulmfit.recipes import model_dir
    from ulmfit.recipes import fit as fit_module
    from ulmfit.recipes import ulmfit as recipe
    from ulmfit.recipes.config import ClassifierTrainConfig
    from ulmfit.recipes.siatl_config import SiatlConfig
    from ulmfit.text.vocab import Vocab
    from ulmfit.train.metrics import classification_metrics

    calls = {}

    def train_siatl(base, train_set, valid_set, classes, out, cfg, *, unlabeled_docs, seed, precision, resume,
                    train_tokens, imbalance, log):
        calls["train"] = dict(base=base, train_set=train_set, cfg=cfg, unlabeled_docs=unlabeled_docs, out=out,
                              train_tokens=train_tokens, seed=seed, resume=resume, imbalance=imbalance)
        model, enc_cfg, head_cfg = recipe.classifier_from_lm(base.lm, base.config, len(classes),
                                                             ClassifierTrainConfig(lin_sizes=(8,)))
        model_dir.save_classifier(out, model, enc_cfg, head_cfg)
        return model, classification_metrics(valid_set.labels, [0] * len(valid_set.labels), classes)

    def load_siatl_model(folder):
        calls["load"] = folder
        return model_dir.load_classifier_model(folder)

    fake = types.ModuleType("ulmfit.recipes.siatl")
    fake.train_siatl, fake.load_siatl_model = train_siatl, load_siatl_model
    monkeypatch.setitem(sys.modules, "ulmfit.recipes.siatl", fake)
    monkeypatch.setattr(fit_module, "plot_history", lambda *a, **k: None)
    (tmp_path / "more.txt").write_text("the gate was open\nboston on monday\n")
    cfg_path = tmp_path / "tiny.json"
    atomic_write_json(cfg_path, tiny_fit_config().to_dict())
    out = tmp_path / "model"
    code, _, err = run_cli(["fit", "--train", tiny_data["train"], "--valid", tiny_data["valid"], "--out", out,
                            "--config", cfg_path, "--recipe", "siatl", "--labels-per-class", "5",
                            "--unlabeled", tmp_path / "more.txt", "--seed", "3"], capsys)
    assert code == 0, err
    got = calls["train"]
    assert got["out"] == out and got["seed"] == 3 and got["resume"] is False and isinstance(got["cfg"], SiatlConfig)
    assert got["cfg"].class_weights == "none"  # 5/5/5 labels: "auto" resolves to no weighting, recorded as such
    assert json.loads((out / "config.json").read_text())["siatl"]["class_weights"] == "none"
    assert len(got["train_set"].texts) == 15 and len(got["train_tokens"]) == 15
    assert len(got["unlabeled_docs"]) == 135 + 2  # the rest of the training rows, then --unlabeled
    base = got["base"]
    assert base.history == [] and base.vocab.itos == Vocab.load(out / "vocab.json").itos
    assert base.config.vocab_size == len(base.vocab) and base.config.drop_mult == SiatlConfig().drop_mult
    meta = json.loads((out / "ulmfit.json").read_text())
    assert meta["recipe"] == "siatl" and meta["directions"] == ["fwd"]
    assert (out / "report.md").exists() and (out / "valid_metrics.json").exists()
    code, stdout, _ = run_cli(["predict", out], capsys, stdin="great flight\n", monkeypatch=monkeypatch)
    assert code == 0 and calls["load"] == out and len(pd.read_csv(io.StringIO(stdout))) == 1
