"""Configuration checked at the door: every bad value, from `--set`, `--config`, CLI flags or the
Python API, is one line naming the field, the value and what is allowed (exit 2), before any data is
read and before torch is even imported."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from ulmfit.errors import UlmfitError
from ulmfit.recipes.config import ClassifierTrainConfig, FitConfig, LMTrainConfig, apply_overrides
from ulmfit.recipes.pretrain import PretrainConfig
from ulmfit.recipes.siatl_config import SiatlConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")

BAD_SETS = [
    ("lm.epochs=abc", "lm.epochs='abc'", "integer"),
    ("lm.bs=0", "lm.bs=0", ">= 1"),
    ("clf.metric=bogus", "clf.metric='bogus'", "macro_f1"),
    ("siatl.metric=f2", "siatl.metric='f2'", "accuracy"),
    ("lm.lr=-1", "lm.lr=-1", "> 0"),
    ("lm.preset=huge", "lm.preset='huge'", "tiny"),
    ("lm.variable_bptt=3", "lm.variable_bptt=3", "true or false"),
    ("clf.lrs=[0.1,\"x\"]", "clf.lrs=(0.1, 'x')", "list of numbers"),
    ("clf.epochs=[]", "clf.epochs=()", "non-empty"),
    ("clf.class_weights=heavy", "clf.class_weights='heavy'", "balanced"),
    ("data.valid_frac=2", "data.valid_frac=2", "< 1"),
    ("precision=fp8", "fit.precision='fp8'", "bf16"),
    ("optimizer=rmsprop", "fit.optimizer='rmsprop'", "adamw"),
    ("recipe=bogus", "recipe 'bogus'", "siatl"),
    ("siatl.pretrained_optimizer=adamw", "siatl.pretrained_optimizer='adamw'", "asgd"),
    ("siatl.head_p=1.5", "siatl.head_p=1.5", "< 1"),
    ("siatl.unfreeze_lstm_epoch=soon", "siatl.unfreeze_lstm_epoch='soon'", "'auto'"),
    ("lm.min_freq=1.5", "lm.min_freq=1.5", "integer"),
    ("seed=-3", "fit.seed=-3", ">= 0"),
]


@pytest.mark.parametrize("assignment,named,allowed", BAD_SETS)
def test_bad_set_values_are_one_line_naming_field_value_and_allowed(assignment, named, allowed):
    with pytest.raises(UlmfitError) as e:
        apply_overrides(FitConfig(), [assignment])
    msg = str(e.value)
    assert "\n" not in msg and named in msg and allowed in msg, msg


def test_cli_rejects_before_reading_data_or_importing_torch(tmp_path):
    """The training file does not exist and torch is never imported: the config check came first."""
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from ulmfit.cli import main; "
            f"rc = main(['fit', '--train', {str(tmp_path / 'missing.csv')!r}, '--out', {str(tmp_path / 'm')!r}, "
            f"'--set', 'lm.epochs=abc']); print('torch' in sys.modules, rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "2"], (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "lm.epochs='abc'" in r.stderr, r.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("flags,named", [(["--set", "epochs=abc"], "pretrain.epochs='abc'"),
                                         (["--set", "precision=fp8"], "pretrain.precision='fp8'"),
                                         (["--config", "huge"], "pretrain.preset='huge'")])
def test_pretrain_rejects_before_reading_the_corpus_or_importing_torch(tmp_path, flags, named):
    """`ulmfit pretrain` checks its PretrainConfig at the door too: the corpus does not exist and torch
    is never imported."""
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from ulmfit.cli import main; "
            f"rc = main(['pretrain', '--corpus', {str(tmp_path / 'missing')!r}, '--out', {str(tmp_path / 'lm')!r}, "
            f"*{flags!r}]); print('torch' in sys.modules, rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "2"], (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and named in r.stderr, r.stderr
    assert not (tmp_path / "lm").exists()


def test_config_file_values_are_checked(tmp_path, capsys):
    from ulmfit.cli import main

    bad = FitConfig().to_dict()
    bad["clf"]["metric"] = "bogus"
    (tmp_path / "c.json").write_text(json.dumps(bad))
    rc = main(["fit", "--train", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m"), "--config",
               str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "c.json" in err and "clf.metric='bogus'" in err, err
    (tmp_path / "c.json").write_text(json.dumps({"lm": {"bs": "big"}}))
    assert main(["fit", "--train", "x.csv", "--out", str(tmp_path / "m"), "--config", str(tmp_path / "c.json")]) == 2
    assert "lm.bs='big'" in capsys.readouterr().err
    (tmp_path / "c.json").write_text("[1, 2]")
    assert main(["fit", "--train", "x.csv", "--out", str(tmp_path / "m"), "--config", str(tmp_path / "c.json")]) == 2


def test_python_api_checks_constructors_replace_and_assignment():
    with pytest.raises(UlmfitError, match=r"clf\.bs=0"):
        ClassifierTrainConfig(bs=0)
    with pytest.raises(UlmfitError, match=r"lm\.schedule='cosine'"):
        replace(LMTrainConfig(), schedule="cosine")
    with pytest.raises(UlmfitError, match=r"pretrain\.direction='up'"):
        PretrainConfig(direction="up")
    with pytest.raises(UlmfitError, match=r"fit\.direction='sideways'"):
        FitConfig(direction="sideways")
    cfg = FitConfig()
    with pytest.raises(UlmfitError, match=r"fit\.seed=1\.5"):
        cfg.seed = 1.5
    assert cfg.seed == 0  # a rejected assignment leaves the config as it was
    with pytest.raises(UlmfitError, match="expected a SiatlConfig"):
        cfg.siatl = {"bs": 3}
    with pytest.raises(UlmfitError, match="unknown field"):
        FitConfig(nonsense=1)


def test_renamed_fields_load_from_old_config_files(tmp_path):
    old = FitConfig().to_dict()
    old["lm"]["max_tokens"] = old["lm"].pop("max_train_tokens")
    old["lm"]["max_tokens"] = 5000
    old["clf"]["max_tokens"], old["clf"]["max_len"] = 300, 200
    del old["clf"]["max_doc_tokens"], old["clf"]["pool_len"]
    old["siatl"]["max_len"] = old["siatl"].pop("max_doc_tokens")
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = FitConfig.load(tmp_path / "config.json")
    assert (cfg.lm.max_train_tokens, cfg.clf.max_doc_tokens, cfg.clf.pool_len, cfg.siatl.max_doc_tokens) == (
        5000, 300, 200, SiatlConfig().max_doc_tokens)
    # and the old names still work with --set
    cfg = apply_overrides(FitConfig(), ["lm.max_tokens=30000", "clf.max_len=99", "siatl.max_len=64"])
    assert (cfg.lm.max_train_tokens, cfg.clf.pool_len, cfg.siatl.max_doc_tokens) == (30000, 99, 64)
    assert PretrainConfig(**{"max_train_tokens": 7}).max_train_tokens == 7
    assert apply_overrides(PretrainConfig(), ["max_tokens=8"]).max_train_tokens == 8


def test_a_resumed_run_keeps_the_values_of_fields_added_after_it_started(tmp_path):
    """A run saved before a field existed resumes doing what it did (each section's BEFORE value: no
    perturbed copies, no lengthened last stage, the hold-out, the full softmax); a partial --config
    file or dict still gets today's defaults."""
    from ulmfit.recipes import fit as fit_mod
    from ulmfit.recipes.config import CORE_SECTIONS
    from ulmfit.recipes import registry

    old = FitConfig().to_dict()
    del old["distill"]["augment"], old["transformer"]["min_last_stage_steps"], old["clf"]["cv"], old["lm"]["softmax"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    for cfg in (FitConfig.load(tmp_path / "config.json", resuming=True),
                fit_mod._resolve_config(tmp_path, None, resume=True)):
        assert (cfg.distill.augment, cfg.transformer.min_last_stage_steps, cfg.clf.cv, cfg.lm.softmax) == (0, 0, "off", "full")
    fresh = FitConfig.load(tmp_path / "config.json")  # --config: a partial file is completed with the defaults
    assert (fresh.distill.augment, fresh.transformer.min_last_stage_steps, fresh.clf.cv, fresh.lm.softmax) == (
        "auto", 250, "auto", "adaptive")
    saved_now = FitConfig().to_dict()  # a run saved by this version keeps every value it wrote
    assert FitConfig.from_dict(saved_now, resuming=True).to_dict() == saved_now
    for name, section in {**CORE_SECTIONS, **registry.sections()}.items():  # every BEFORE value is a valid one
        before = getattr(section, "BEFORE", {})
        assert set(before) <= {f.name for f in fields(section)}, name
        section(**before)


def test_good_values_pass_and_round_trip():
    cfg = apply_overrides(FitConfig(), ["lm.epochs=2", "clf.lrs=[0.01,0.01,0.005,0.001]", "lm.lr=1", "recipe=siatl",
                                        "siatl.pretrained_lr=0.002", "clf.patience=null", "data.labels_per_class=5"])
    assert cfg.clf.lrs == (0.01, 0.01, 0.005, 0.001) and cfg.lm.lr == 1 and cfg.clf.patience is None
    assert FitConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
