"""`ulmfit fit --recipe tfidf`: the TF-IDF + logistic-regression model folder. Its probabilities equal
sklearn's for the same fit (two and three classes), it reloads from JSON + safetensors alone (nothing
pickled), joins an ensemble, and a damaged folder or an unsupported request is one clear line."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from conftest import make_rows
from ulmfit.cli import main
from ulmfit.errors import UlmfitError
from ulmfit.recipes.baselines import tfidf_logreg, vectorizer
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.ensemble import build_ensemble
from ulmfit.recipes.fit import fit
from ulmfit.recipes.predictor import load
from ulmfit.recipes.tfidf import logit_params
from ulmfit.train.calibration import softmax


def tfidf_config(**kw) -> FitConfig:
    cfg = FitConfig(recipe="tfidf", pretrained=None)
    cfg.tfidf = replace(cfg.tfidf, min_df=1, **kw)
    cfg.imbalance = replace(cfg.imbalance, decision_rule="none", temperature=False)  # the raw model's argmax
    return cfg


@pytest.mark.parametrize("k", [2, 3])
def test_logit_params_give_sklearns_probabilities(k):
    rows = make_rows(120, 0)
    rows = rows[rows.label.isin(["pos", "neg", "neu"][:k])]
    x = vectorizer(min_df=1).fit_transform(rows.text)
    y = rows.label.map({"pos": 0, "neg": 1, "neu": 2}).to_numpy()
    clf = LogisticRegression(C=3.0, max_iter=500).fit(x, y)
    coef, intercept = logit_params(clf, k)
    assert coef.shape == (k, x.shape[1]) and intercept.shape == (k,)
    np.testing.assert_allclose(softmax(np.asarray(x @ coef.T) + intercept), clf.predict_proba(x), atol=1e-12)


def test_a_class_missing_from_training_gets_no_probability():
    rows = make_rows(90, 0)
    rows = rows[rows.label != "neu"]
    x = vectorizer(min_df=1).fit_transform(rows.text)
    clf = LogisticRegression().fit(x, rows.label.map({"pos": 0, "neg": 2}).to_numpy())  # class 1 never seen
    coef, intercept = logit_params(clf, 3)
    p = softmax(np.asarray(x @ coef.T) + intercept)
    assert p[:, 1].max() < 1e-300 and np.allclose(p[:, [0, 2]], clf.predict_proba(x))


def test_fit_reload_predict_equals_the_baseline(tiny_data, tmp_path):
    """The folder predicts what the baseline the benchmarks and the demo use (same fit, same C) predicts."""
    out = tmp_path / "tf"
    model = fit(tiny_data["train"], tiny_data["valid"], out=out, config=tfidf_config(Cs=(1.0, 10.0)))
    assert sorted(p.name for p in out.iterdir()) == ["calibration.json", "config.json", "report.md", "tfidf.json",
                                                     "tfidf.safetensors", "ulmfit.json", "valid_metrics.json"]
    meta = json.loads((out / "ulmfit.json").read_text())
    assert meta["recipe"] == "tfidf" and meta["directions"] == ["fwd"]
    tr, va, te = (pd.read_csv(tiny_data[s]) for s in ("train", "valid", "test"))
    classes = model.classes
    predict, info = tfidf_logreg(list(tr.text), [classes.index(l) for l in tr.label], list(va.text),
                                 [classes.index(l) for l in va.label], Cs=(1.0, 10.0))
    assert json.loads((out / "tfidf.json").read_text())["C"] == info["C"]
    again = load(out)  # a fresh load, from the files alone
    assert again.predict(list(te.text)) == [classes[i] for i in predict(list(te.text))]
    p = again.predict_proba(list(te.text))
    assert p.shape == (len(te), 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert "Recipe: tfidf" in (out / "report.md").read_text() and "pretrained: none" in (out / "report.md").read_text()
    metrics = again.evaluate(list(te.text), list(te.label))
    assert metrics["macro_f1"] > 0.8  # the tiny set's class words separate it


def test_unlabelled_text_is_said_to_be_unused(tiny_data, tmp_path):
    lines = []
    fit(tiny_data["train"], tiny_data["valid"], out=tmp_path / "tf", config=tfidf_config(), unlabeled=[tiny_data["test"]],
        log=lines.append)
    assert any("unlabelled texts are not used" in l for l in lines)


def test_selection_metric_and_class_weights_reach_the_fit(tiny_data, tmp_path):
    cfg = tfidf_config(Cs=(0.01, 100.0), metric="valid_loss", class_weights="balanced")
    fit(tiny_data["train"], tiny_data["valid"], out=tmp_path / "tf", config=cfg)
    saved = json.loads((tmp_path / "tf" / "valid_metrics.json").read_text())["tfidf"]
    assert saved["class_weights"] == "balanced" and saved["C"] in (0.01, 100.0)
    assert json.loads((tmp_path / "tf" / "config.json").read_text())["tfidf"]["metric"] == "valid_loss"


def test_max_iter_reaches_the_solver(tiny_data, tmp_path):
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning):  # one lbfgs iteration cannot converge
        fit(tiny_data["train"], tiny_data["valid"], out=tmp_path / "tf", config=tfidf_config(max_iter=1))


def test_a_tfidf_member_joins_an_ensemble_that_reloads_elsewhere(tiny_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    fit(tiny_data["train"], tiny_data["valid"], out=a, config=tfidf_config(ngram_max=1))
    fit(tiny_data["train"], tiny_data["valid"], out=b, config=tfidf_config(ngram_max=2))
    ens = build_ensemble([a, b], tiny_data["valid"], tmp_path / "ens", fixed="equal")
    te = pd.read_csv(tiny_data["test"])
    want = ens.predict_proba(list(te.text))
    shutil.move(tmp_path / "ens", tmp_path / "moved")
    shutil.rmtree(a), shutil.rmtree(b)
    np.testing.assert_allclose(load(tmp_path / "moved").predict_proba(list(te.text)), want, atol=1e-6)


def test_damaged_folders_are_one_line(tiny_data, tmp_path):
    out = tmp_path / "tf"
    fit(tiny_data["train"], tiny_data["valid"], out=out, config=tfidf_config())
    d = json.loads((out / "tfidf.json").read_text())
    (out / "tfidf.json").write_text(json.dumps({**d, "terms": d["terms"][:-1]}))  # one term lost
    with pytest.raises(UlmfitError, match=r"tfidf.safetensors: shapes .* do not match tfidf.json"):
        load(out)
    (out / "tfidf.json").write_text("{not json")
    with pytest.raises(UlmfitError, match=r"tfidf.json: corrupt"):
        load(out)
    (out / "tfidf.json").unlink()
    with pytest.raises(UlmfitError, match=r"tfidf.json missing"):
        load(out)


def test_unsupported_requests_are_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "tf"
    args = ["fit", "--recipe", "tfidf", "--train", str(tiny_data["train"]), "--valid", str(tiny_data["valid"])]
    assert main(args + ["--out", str(tmp_path / "both"), "--direction", "both"]) == 2
    assert "--recipe tfidf supports --direction fwd only" in capsys.readouterr().err
    assert main(args + ["--out", str(out), "--set", "tfidf.Cs=[]"]) == 2
    assert "Cs" in capsys.readouterr().err
    assert main(args + ["--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(out), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--runtime torch" in capsys.readouterr().err
    with pytest.raises(UlmfitError, match="bf16 prediction is only available"):
        load(out, precision="bf16")
