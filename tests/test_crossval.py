"""Cross-validated selection for small label sets (issue 21): the rule that switches it on, the
folds, the chosen epoch, the loop keeping a chosen epoch, and end to end: the report holds the
spread, the calibration is fitted out of fold, a reloaded model predicts identically, and an
interrupted run resumes to the same model."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from ulmfit.errors import UlmfitError
from ulmfit.train.crossval import choose_epoch, n_folds, smallest_class, spread, stratified_folds, use_cv


def labels_of(counts, seed=0):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


# ------------------------------------------------------------------------------------ the switch

def test_auto_cross_validates_only_when_the_validation_split_has_few_examples_of_some_class():
    few = labels_of([20, 27, 3])  # a 10% hold-out of 500 labels at 40/55/5
    many = labels_of([1050, 1444, 131])  # the tweets' own validation split at 40/55/5
    assert use_cv("auto", few, 3, below=30)
    assert not use_cv("auto", many, 3, below=30)
    assert not use_cv("auto", labels_of([30, 30, 30]), 3, below=30)  # the boundary: 30 is enough
    assert use_cv("auto", labels_of([40, 40, 0]), 3, below=30)  # a class missing from validation counts as 0
    assert smallest_class(labels_of([40, 40, 0]), 3) == 0
    assert use_cv("on", many, 3, below=30) and not use_cv("off", few, 3, below=30)
    with pytest.raises(UlmfitError, match="choose one of auto, on, off"):
        use_cv("yes", few, 3, below=30)


def test_the_config_field_is_checked_at_the_door():
    from ulmfit.recipes.ulmfit_config import ClassifierTrainConfig

    assert ClassifierTrainConfig().cv == "auto"
    with pytest.raises(UlmfitError, match="clf.cv='sometimes'"):
        ClassifierTrainConfig(cv="sometimes")
    with pytest.raises(UlmfitError, match="clf.cv_folds=1"):
        ClassifierTrainConfig(cv_folds=1)


def test_fit_resolves_auto_per_data_set_and_records_it(tmp_path):
    from conftest import tiny_fit_config
    from ulmfit.recipes.posthoc import resolve_selection
    from ulmfit.recipes.prepare import FitData, Labelled

    cfg = tiny_fit_config()
    cfg.clf = replace(cfg.clf, cv="auto")

    def data(valid_counts):
        return FitData(Labelled([], labels_of([100, 100, 100]), "t"), Labelled([], labels_of(valid_counts), "v"),
                       ["a", "b", "c"], [])

    logs = []
    small = resolve_selection(cfg, data([10, 10, 2]), logs.append)
    large = resolve_selection(cfg, data([60, 60, 40]), logs.append)
    assert small.clf.cv == "on" and large.clf.cv == "off"
    assert small.to_dict()["clf"]["cv"] == "on"  # what config.json records
    assert "rarest class has 2 examples, < clf.cv_below 30: cross-validated" in logs[0]
    assert "rarest class has 40 examples, >= clf.cv_below 30: on the validation split" in logs[1]


# ------------------------------------------------------------------------------------ folds and the epoch

@pytest.mark.parametrize("counts,k", [([20, 27, 3], 5), ([180, 248, 22], 5), ([7, 7, 7, 7], 3)])
def test_folds_are_disjoint_cover_every_row_and_are_stratified(counts, k):
    y = labels_of(counts, seed=3)
    k = n_folds(y, k)
    fold = stratified_folds(y, k, seed=0)
    assert fold.shape == y.shape and set(fold.tolist()) == set(range(k))  # every row in exactly one fold
    for c, n in enumerate(counts):
        per_fold = np.bincount(fold[y == c], minlength=k)
        assert per_fold.sum() == n and per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    assert (stratified_folds(y, k, seed=0) == fold).all()  # seeded
    assert not (stratified_folds(y, k, seed=1) == fold).all()


def test_fewer_folds_when_the_rarest_class_has_fewer_rows():
    assert n_folds(labels_of([50, 50, 3]), 5) == 3
    assert n_folds(labels_of([50, 50, 1]), 5) == 2
    with pytest.raises(UlmfitError, match="at least 4 labelled rows"):
        n_folds(labels_of([2, 1]), 5)


def test_the_chosen_epoch_is_the_argmax_of_the_mean_curve_not_of_any_one_fold():
    # each fold peaks somewhere else (noise); the mean peaks at epoch 3, where no single fold does
    curves = [[0.30, 0.55, 0.40, 0.50, 0.35],
              [0.30, 0.40, 0.56, 0.52, 0.38],
              [0.30, 0.42, 0.45, 0.53, 0.60]]
    epoch, mean = choose_epoch(curves)
    assert epoch == 3 and epoch not in [int(np.argmax(c)) for c in curves]
    assert np.allclose(mean, np.mean(curves, axis=0))
    assert choose_epoch([[0.2, 0.5, 0.5]])[0] == 1  # ties: the earliest epoch
    assert choose_epoch([[0.9, 0.4, 0.6], [0.8, 0.5, 0.5]], mode="min")[0] == 1  # a loss: the smallest mean
    with pytest.raises(UlmfitError, match="of one length"):
        choose_epoch([[0.1, 0.2], [0.1]])
    s = spread([0.2, 0.4])
    assert s == pytest.approx({"mean": 0.3, "sd": 0.1, "min": 0.2, "max": 0.4})


# ------------------------------------------------------------------------------------ the loop keeps a chosen epoch

def test_the_loop_keeps_the_chosen_epochs_weights_and_stops_after_it_without_a_validation_set(tmp_path):
    from test_loop import Batches, Net, RegressionTask

    from ulmfit.train.checkpoint import load_weights
    from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
    from ulmfit.train.optim import make_optimizer, param_groups

    stages = [Stage("head", 2, 1e-2, freeze_to=-1), Stage("all", 3, 5e-3, freeze_to=0, can_stop_early=True)]

    def run(folder, select, valid):
        torch.manual_seed(123)
        model = Net()
        groups = model.layer_groups()
        opt = make_optimizer(param_groups(groups, 1e-2), "adamw")
        res = run_phase(model, RegressionTask(), opt, groups, stages, Batches(), valid, PhaseFiles(folder, "toy"),
                        LoopConfig(patience=None, progress=False, select_epoch=select))
        return model, res

    full, full_res = run(tmp_path / "full", None, Batches(seed=1))  # all 5 epochs, a checkpoint after each
    model, res = run(tmp_path / "cut", 2, None)
    assert [r["epoch"] for r in res.history] == [0, 1, 2] and res.stopped and res.best_epoch == 2
    assert "valid_loss" not in res.history[-1] and [r["best"] for r in res.history] == [False, False, True]
    # the same training as the full run up to epoch 2 (same seeds, same schedule): its weights after epoch 2
    state = load_weights(tmp_path / "cut" / "checkpoints" / "toy-best.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert not all(torch.equal(v, full.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="select_epoch"):
        run(tmp_path / "none", None, None)


# ------------------------------------------------------------------------------------ end to end

def small_imbalanced(d):
    from conftest import make_rows

    def imbalanced(n, seed):
        df = make_rows(n, seed)
        pos = df[df.label == "pos"]
        return pd.concat([df[df.label != "pos"], pos.iloc[: max(3, len(pos) // 4)]]).reset_index(drop=True)

    for name, n, seed in (("train", 150, 0), ("valid", 30, 1), ("test", 60, 2)):
        imbalanced(n, seed).to_csv(d / f"{name}.csv", index=False)


def cv_config():
    from conftest import tiny_fit_config

    cfg = tiny_fit_config()
    cfg.lm = replace(cfg.lm, epochs=2)
    cfg.clf = replace(cfg.clf, cv="auto", cv_folds=3, epochs=(1, 1, 1, 3))
    return cfg


@pytest.fixture(scope="module")
def cv_model(tmp_path_factory):
    from ulmfit.recipes.fit import fit

    d = tmp_path_factory.mktemp("cv")
    small_imbalanced(d)
    logs = []
    model = fit(d / "train.csv", d / "valid.csv", out=d / "model", config=cv_config(), log=logs.append)
    return d, d / "model", model, logs


@pytest.mark.slow
def test_a_small_label_set_is_cross_validated_and_the_report_holds_the_spread(cv_model):
    d, out, _, logs = cv_model
    assert json.loads((out / "config.json").read_text())["clf"]["cv"] == "on"  # resolved from auto, recorded
    cv = json.loads((out / "cv.json").read_text())
    n_train, n_valid = len(pd.read_csv(d / "train.csv")), len(pd.read_csv(d / "valid.csv"))
    assert cv["rows"] == n_train + n_valid and cv["folds"] == 3
    # the chosen epoch is the argmax of the mean of the folds' curves as the fold logs recorded them
    lines = [json.loads(l) for l in (out / "cv_history.jsonl").read_text().splitlines()]
    curves = [[r["macro_f1"] for r in lines if r["phase"] == f"cv{f}"] for f in range(3)]
    assert all(len(c) == 6 for c in curves)  # no early stopping inside a fold: every fold has the whole curve
    assert cv["epoch"] == int(np.argmax(np.mean(curves, axis=0)))
    # the refit trained on every row and stopped after the chosen epoch
    refit = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines()]
    refit = [r for r in refit if r["phase"] == "classifier"]
    assert [r["epoch"] for r in refit] == list(range(cv["epoch"] + 1)) and refit[-1]["best"]
    # the out-of-fold probabilities are those of each fold's model at the chosen epoch
    oof = np.asarray(cv["oof_probs"])
    for f in range(3):
        rows = np.flatnonzero(np.asarray(cv["fold"]) == f)
        np.testing.assert_allclose(oof[rows], np.asarray([r for r in lines if r["phase"] == f"cv{f}"][cv["epoch"]]["probs"]))
    # the temperature and the rule were fitted on them, not on rows the model trained on
    post = json.loads((out / "calibration.json").read_text())
    assert post["valid"]["n"] == cv["rows"]
    report = (out / "report.md").read_text()
    at = cv["at_epoch"]
    assert "## Cross-validated selection" in report
    assert f"mean {at['mean']:.4f}, sd {at['sd']:.4f}, min {at['min']:.4f}, max {at['max']:.4f}" in report
    assert at == pytest.approx(spread([c[cv["epoch"]] for c in curves]))
    vm = json.loads((out / "valid_metrics.json").read_text())
    assert vm["cross_validated"]["epoch"] == cv["epoch"] and "oof_probs" not in vm["cross_validated"]
    assert any("cross-validated (3 folds)" in l for l in logs)
    assert any(l.startswith("cross-validated selection: epoch") and "sd" in l for l in logs)


@pytest.mark.slow
def test_a_reloaded_cross_validated_model_predicts_identically(cv_model):
    import ulmfit

    d, out, model, _ = cv_model
    texts = pd.read_csv(d / "test.csv")["text"].tolist()
    again = ulmfit.load(out)
    assert again.predict(texts) == model.predict(texts)
    np.testing.assert_array_equal(again.predict_proba(texts), model.predict_proba(texts))


@pytest.mark.slow
def test_an_interrupted_cross_validated_run_resumes_to_the_same_model(cv_model, tmp_path, monkeypatch):
    import ulmfit
    from ulmfit.recipes import ulmfit as recipe
    from ulmfit.recipes.fit import fit

    d, out, model, _ = cv_model
    real, calls = recipe._train, []

    def die_in_the_third_fold(*a, **kw):
        calls.append(a[7].prefix)  # _train's 8th argument: the phase's files
        if a[7].prefix == "cv2":
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(recipe, "_train", die_in_the_third_fold)
    with pytest.raises(KeyboardInterrupt):
        fit(d / "train.csv", d / "valid.csv", out=tmp_path / "m", config=cv_config())
    assert (tmp_path / "m" / "checkpoints" / "cv-fold1.json").exists()  # finished folds are on disk
    assert not (tmp_path / "m" / "checkpoints" / "cv1-last.safetensors").exists()  # their weights are not kept
    calls.clear()
    monkeypatch.setattr(recipe, "_train", lambda *a, **kw: calls.append(a[7].prefix) or real(*a, **kw))
    fit(d / "train.csv", d / "valid.csv", out=tmp_path / "m", config=cv_config(), resume=True)
    assert calls == ["cv2", "classifier"]  # the two finished folds were not trained again
    texts = pd.read_csv(d / "test.csv")["text"].tolist()
    assert json.loads((tmp_path / "m" / "cv.json").read_text())["epoch"] == json.loads((out / "cv.json").read_text())["epoch"]
    np.testing.assert_allclose(ulmfit.load(tmp_path / "m").predict_proba(texts), model.predict_proba(texts), atol=1e-6)


@pytest.mark.slow
def test_a_large_validation_split_is_not_cross_validated(tmp_path):
    from conftest import make_rows
    from ulmfit.recipes.fit import fit

    make_rows(90, 0).to_csv(tmp_path / "train.csv", index=False)
    make_rows(90, 1).to_csv(tmp_path / "valid.csv", index=False)  # 30 per class
    cfg = cv_config()
    cfg.clf = replace(cfg.clf, epochs=(1, 1, 1, 1))
    logs = []
    fit(tmp_path / "train.csv", tmp_path / "valid.csv", out=tmp_path / "m", config=cfg, log=logs.append)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["clf"]["cv"] == "off"
    assert not (tmp_path / "m" / "cv.json").exists() and "Cross-validated" not in (tmp_path / "m" / "report.md").read_text()
    assert any(">= clf.cv_below 30: on the validation split" in l for l in logs)


@pytest.mark.slow
def test_siatl_cross_validates_when_switched_on_through_the_same_fold_loop(tmp_path):
    import ulmfit
    from conftest import tiny_fit_config
    from ulmfit.recipes.fit import fit

    small_imbalanced(tmp_path)
    cfg = tiny_fit_config()
    cfg.recipe = "siatl"
    cfg.siatl = replace(cfg.siatl, epochs=3, cv="auto", cv_folds=3)
    assert type(cfg.siatl)().cv == "off"  # SiATL's default: every fold would repeat the whole run
    logs = []
    model = fit(tmp_path / "train.csv", tmp_path / "valid.csv", out=tmp_path / "m", config=cfg, log=logs.append)
    out = tmp_path / "m"
    assert json.loads((out / "config.json").read_text())["siatl"]["cv"] == "on"
    cv = json.loads((out / "cv.json").read_text())
    lines = [json.loads(l) for l in (out / "cv_history.jsonl").read_text().splitlines()]
    curves = [[r["macro_f1"] for r in lines if r["phase"] == f"cv{f}"] for f in range(3)]
    assert [r["epoch"] for r in lines if r["phase"] == "cv0"] == [1, 2, 3]  # SiATL counts epochs from 1
    assert cv["epoch"] == 1 + int(np.argmax(np.mean(curves, axis=0)))
    refit = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in refit if r["phase"] == "siatl"] == list(range(1, cv["epoch"] + 1))
    assert "## Cross-validated selection" in (out / "report.md").read_text()
    texts = pd.read_csv(tmp_path / "test.csv")["text"].tolist()
    assert ulmfit.load(out).predict(texts) == model.predict(texts)
