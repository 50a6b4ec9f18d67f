"""`fit`'s few-label path (recipes/few_labels.py): the rule that takes it, and the behaviour: a run with few
labels and unlabelled text is its teacher, the teacher's distilled student and the validated ensemble of the
two, equal to the three commands run by hand, and an interrupted run resumed equals an uninterrupted one."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

import ulmfit  # noqa: E402
from ulmfit.cli import main  # noqa: E402
from ulmfit.errors import UlmfitError  # noqa: E402
from ulmfit.fileio import atomic_write_json  # noqa: E402
from ulmfit.recipes import few_labels  # noqa: E402
from ulmfit.recipes.config import FitConfig  # noqa: E402
from ulmfit.recipes.ensemble import build_ensemble  # noqa: E402

from conftest import make_rows  # noqa: E402
from tiny_bert import make_tiny_bert  # noqa: E402


def transformer_config(**kw) -> FitConfig:
    return FitConfig(recipe="transformer", **kw)


def data(n_lab: int, n_unl: int, n_valid: int = 300):
    """A FitData of the given sizes (3 classes; texts are not read by the rule)."""
    from ulmfit.recipes.prepare import FitData, Labelled

    labels = lambda n: np.arange(n) % 3
    return FitData(Labelled([""] * n_lab, labels(n_lab), "train.csv"), Labelled([""] * n_valid, labels(n_valid), "valid.csv"),
                   ["a", "b", "c"], [""] * n_unl)


@pytest.mark.parametrize("setting, cfg_kw, n_lab, n_unl, taken", [
    ("auto", {}, 500, 20_000, True),  # the measured case
    ("auto", {}, few_labels.FEW_LABELS, 1, True),
    ("auto", {}, few_labels.FEW_LABELS + 1, 20_000, False),  # enough labels: the student did not help
    ("auto", {}, 500, 0, False),  # nothing to distil over
    ("auto", {"recipe": "ulmfit"}, 500, 20_000, False),  # an AWD-LSTM model: not measured as a teacher
    ("auto", {"recipe": "distill"}, 500, 20_000, False),  # a student already
    ("on", {"recipe": "ulmfit"}, 50_000, 10, True),
    ("off", {}, 500, 20_000, False),
])
def test_the_rule(setting, cfg_kw, n_lab, n_unl, taken):
    cfg = FitConfig(**{"recipe": "transformer", **cfg_kw}, student=setting)
    assert few_labels.decide(cfg, data(n_lab, n_unl))[0] is taken
    lines = []
    assert few_labels.resolve(cfg, data(n_lab, n_unl), lines.append).student == ("on" if taken else "off")  # saved resolved
    if setting == "auto" and taken:
        assert len(lines) == 1 and "--student off" in lines[0]


def test_the_rule_refuses_what_it_cannot_do_before_anything_trains():
    with pytest.raises(UlmfitError, match="needs unlabelled text.*--student off"):
        few_labels.decide(transformer_config(student="on"), data(500, 0))
    with pytest.raises(UlmfitError, match="distill run trains a student already"):
        few_labels.decide(FitConfig(recipe="distill", student="on"), data(500, 100))
    # the ensemble's weights are chosen out of fold on the validation rows: too few, and auto says why
    with pytest.raises(UlmfitError, match="validation split has 9 rows.*at least 10"):
        few_labels.decide(transformer_config(student="on"), data(500, 100, n_valid=9))
    lines = []
    assert few_labels.resolve(transformer_config(), data(500, 100, n_valid=9), lines.append).student == "off"
    assert lines == ["few labels: no student (9 validation rows (the ensemble's weights need at least 10)); the model alone"]
    # a cross-validated teacher trains on the validation rows: no held-out rows for the weights
    cv_on = FitConfig(recipe="ulmfit", student="on")
    cv_on.clf = replace(cv_on.clf, cv="on")
    with pytest.raises(UlmfitError, match="cross-validation.*clf.cv=off"):
        few_labels.decide(cv_on, data(500, 100))
    with pytest.raises(UlmfitError, match="student"):
        FitConfig(student="sometimes")
    # the student of the path is a fwd+bwd distill run of the same settings, its teacher the first member
    cfg = transformer_config(student="on", seed=7)
    cfg.lm = replace(cfg.lm, epochs=2)
    s = few_labels.student_config(cfg, "/x/members/m0")
    assert (s.recipe, s.direction, s.student, s.seed, s.lm.epochs, s.distill.teacher) == \
        ("distill", "both", "off", 7, 2, "/x/members/m0")
    assert few_labels.teacher_config(cfg).to_dict() == {**cfg.to_dict(), "student": "off"}


def test_a_run_saved_before_the_setting_resumes_without_a_student(tmp_path):
    saved = FitConfig(recipe="transformer").to_dict()
    del saved["student"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert FitConfig.load(tmp_path / "config.json", resuming=True).student == "off"
    assert FitConfig.load(tmp_path / "config.json").student == "auto"  # a --config file: today's default


class Stop(Exception):
    pass


def test_fit_flag_sets_it(monkeypatch):
    seen = {}

    def fake_fit(*a, **k):
        seen.update(cfg=k["config"])
        raise Stop

    monkeypatch.setattr("ulmfit.recipes.fit.fit", fake_fit)
    with pytest.raises(Stop):
        main(["fit", "--train", "t.csv", "--out", "o", "--student", "off"])
    assert seen["cfg"].student == "off"


# ----------------------------------------------------------------------------- the path, end to end

@pytest.fixture(scope="module")
def few(tmp_path_factory):
    """A tiny BERT as the teacher's backbone, 60 labelled rows, 90 unlabelled texts, and the run's config
    (tiny teacher and tiny from-scratch student; the student's two models one after the other)."""
    d = tmp_path_factory.mktemp("few")
    make_rows(60, 0).to_csv(d / "train.csv", index=False)
    make_rows(45, 1).to_csv(d / "valid.csv", index=False)
    make_rows(90, 5)[["text"]].to_csv(d / "unl.csv", index=False)
    cfg = FitConfig(recipe="transformer", pretrained=None, pretrained_bwd=None, parallel_directions="off")
    cfg.transformer = replace(cfg.transformer, backbone=str(make_tiny_bert(d / "bert")), window=16, overlap=4,
                              blocks_per_group=1, mlm_epochs=0, lrs=(1e-2, 2e-3, 2e-3), epochs=(1, 1, 1), bs=16,
                              min_steps_per_epoch=0, min_last_stage_steps=0)
    cfg.lm = replace(cfg.lm, preset="tiny", epochs=1, frozen_epochs=0, bs=8, bptt=12, min_freq=1, lr=3e-2, valid_frac=0.1)
    cfg.clf = replace(cfg.clf, bs=16, bptt=8, pool_len=64, epochs=(1, 2), lrs=(3e-2, 2e-2), patience=None,
                      lin_sizes=(16,), min_steps_per_epoch=0, cv="off")
    atomic_write_json(d / "cfg.json", cfg.to_dict())
    return d


def run_fit(few, out, *extra) -> int:
    return main([str(a) for a in ["fit", "--train", few / "train.csv", "--valid", few / "valid.csv", "--unlabeled",
                                  few / "unl.csv", "--config", few / "cfg.json", "--out", out, *extra]])


@pytest.mark.slow
def test_few_labels_fit_is_its_teacher_student_and_ensemble_and_equals_the_commands_by_hand(few, tmp_path, capsys):
    out = tmp_path / "path"
    assert run_fit(few, out) == 0
    err = capsys.readouterr().err
    assert "few labels: 60 labelled training rows" in err and "step 3 of 3" in err
    marker = json.loads((out / "ulmfit.json").read_text())
    assert marker["kind"] == "ensemble" and [m["path"] for m in marker["members"]] == ["members/m0", "members/m1"]
    teacher, student = (json.loads((out / m / "ulmfit.json").read_text()) for m in ("members/m0", "members/m1"))
    assert teacher["recipe"] == "transformer" and (student["recipe"], student["directions"]) == ("distill", ["fwd", "bwd"])
    assert json.loads((out / "config.json").read_text())["student"] == "on"  # saved resolved: --resume takes the path
    assert "few-label path" in (out / "report.md").read_text() and (out / "members/m0/report.md").exists()
    assert not list(out.rglob("checkpoints"))

    # by hand: the model alone, `ulmfit distill` from it, `ulmfit ensemble --anchor best-member` of the two
    assert run_fit(few, tmp_path / "t", "--student", "off") == 0
    assert json.loads((tmp_path / "t" / "ulmfit.json").read_text())["kind"] == "classifier"
    assert main([str(a) for a in ["distill", "--teacher", tmp_path / "t", "--train", few / "train.csv", "--valid",
                                  few / "valid.csv", "--unlabeled", few / "unl.csv", "--config", few / "cfg.json",
                                  "--direction", "both",
                                  "--out", tmp_path / "s"]]) == 0
    build_ensemble([tmp_path / "t", tmp_path / "s"], few / "valid.csv", tmp_path / "e", anchor="best member")
    # the path's rule falls back to the teacher (few_labels.ENSEMBLE_ANCHOR), not to `ulmfit ensemble`'s default
    selection = json.loads((out / "valid_metrics.json").read_text())["selection"]
    assert selection["anchor"] == "best member" and "top_members" not in selection
    texts = pd.read_csv(few / "valid.csv").text.tolist() + ["great flight thanks", "awful rude crew"]
    path, by_hand = ulmfit.load(out), ulmfit.load(tmp_path / "e")
    np.testing.assert_allclose(path.predict_proba(texts), by_hand.predict_proba(texts), atol=1e-6)
    assert path.predict(texts) == by_hand.predict(texts)
    assert [m["weight"] for m in marker["members"]] == \
        [m["weight"] for m in json.loads((tmp_path / "e" / "ulmfit.json").read_text())["members"]]


@pytest.mark.slow
def test_interrupted_in_the_student_resumes_keeps_the_teacher_and_equals_an_uninterrupted_run(few, tmp_path, capsys,
                                                                                           monkeypatch):
    from ulmfit.train import loop

    assert run_fit(few, tmp_path / "full") == 0
    real = loop.append_jsonl

    def interrupt(path, record):
        if "members/m1" in str(path) and record.get("phase") == "classifier":
            raise KeyboardInterrupt  # the student's first classifier epoch: its LMs are trained, checkpointed
        real(path, record)

    monkeypatch.setattr(loop, "append_jsonl", interrupt)
    assert run_fit(few, tmp_path / "cut") == 130
    assert not (tmp_path / "cut" / "ulmfit.json").exists() and (tmp_path / "cut/members/m0/ulmfit.json").exists()
    monkeypatch.setattr(loop, "append_jsonl", real)
    capsys.readouterr()
    assert main(["fit", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "step 1 of 3" in err and "trained already: kept" in err and "(resumed)" in err
    texts = pd.read_csv(few / "valid.csv").text.tolist()
    np.testing.assert_allclose(ulmfit.load(tmp_path / "cut").predict_proba(texts),
                               ulmfit.load(tmp_path / "full").predict_proba(texts), atol=1e-6)
