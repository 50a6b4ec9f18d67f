"""`ulmfit ensemble`: weights chosen on validation, probabilities averaged with them, the folder
predicts / evaluates / reloads like any model folder, also after being moved with its sources gone."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from math import comb

import numpy as np
import pytest

from conftest import tiny_fit_config
from ulmfit.cli import main
from ulmfit.errors import UlmfitError
from ulmfit.recipes.ensemble import build_ensemble, choose_weights, grid_for, simplex_grid
from ulmfit.recipes.fit import fit
from ulmfit.recipes.predictor import load
from ulmfit.train.metrics import classification_metrics

CLASSES = ["a", "b", "c"]


@pytest.mark.parametrize("k,grid", [(1, 10), (2, 10), (3, 10), (4, 5)])
def test_simplex_grid_is_every_point_of_the_simplex(k, grid):
    pts = simplex_grid(k, grid)
    assert pts.shape == (comb(grid + k - 1, k - 1), k)
    np.testing.assert_allclose(pts.sum(1), 1.0)
    assert (pts >= 0).all() and len({tuple(np.round(p * grid).astype(int)) for p in pts}) == len(pts)


def test_grid_shrinks_to_bound_the_search():
    assert grid_for(2) == 10 and grid_for(3) == 10
    g = grid_for(12)
    assert comb(g + 11, 11) <= 5000 < comb(g + 12, 11)


def one_hot_noisy(y, right, rng, k=3):
    """Probabilities that put 0.7 on the true class where `right`, else on a wrong one."""
    p = np.full((len(y), k), 0.15)
    wrong = (y + 1 + rng.integers(0, k - 1, len(y))) % k
    p[np.arange(len(y)), np.where(right, y, wrong)] = 0.7
    return p


def test_choose_weights_finds_the_best_blend():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    # Member 0 is right on classes a and b, member 1 on class c only, member 2 is noise.
    probs = [one_hot_noisy(y, y != 2, rng), one_hot_noisy(y, y == 2, rng), rng.dirichlet(np.ones(3), len(y))]
    w, score = choose_weights(probs, y, CLASSES)
    assert w.sum() == pytest.approx(1.0) and score["points"] == 66
    best = max(classification_metrics(y, np.tensordot(v, np.stack(probs), 1).argmax(1), CLASSES)["macro_f1"]
               for v in simplex_grid(3, 10))
    assert score["macro_f1"] == pytest.approx(best)
    assert score["macro_f1"] > max(classification_metrics(y, p.argmax(1), CLASSES)["macro_f1"] for p in probs)
    # A perfect member alone: all the weight goes to it (ties on F1 are broken by log-loss).
    perfect = np.eye(3)[y] * 0.98 + 0.01 / 1.5
    w, _ = choose_weights([probs[2], perfect], y, CLASSES)
    assert w.tolist() == [0.0, 1.0]


@pytest.fixture
def two_models(tiny_data, tmp_path):
    """Two tiny AWD-LSTM classifiers that differ (seeds), trained on the tiny data."""
    outs = []
    for seed in (0, 1):
        cfg = tiny_fit_config()
        cfg.seed = seed
        cfg.lm = replace(cfg.lm, epochs=1)
        cfg.clf = replace(cfg.clf, epochs=(1, 1, 1, 2))
        outs.append(fit(tiny_data["train"], tiny_data["valid"], out=tmp_path / f"m{seed}", config=cfg).folder)
    return outs


@pytest.mark.slow
def test_ensemble_folder_averages_with_its_weights_and_moves(two_models, tiny_data, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["ensemble", *map(str, two_models), "--valid", str(tiny_data["valid"]), "--out", str(out)]) == 0
    assert "weights" in capsys.readouterr().err
    marker = json.loads((out / "ulmfit.json").read_text())
    weights = [m["weight"] for m in marker["members"]]
    assert marker["kind"] == "ensemble" and sum(weights) == pytest.approx(1.0)
    texts = ["Great flight thanks", "the gate was awful", "monday schedule boston"]
    direct = sum(w * load(m).predict_proba(texts) for w, m in zip(weights, two_models))
    np.testing.assert_allclose(load(out).predict_proba(texts), direct, atol=1e-6)
    recorded = json.loads((out / "valid_metrics.json").read_text())  # chosen on what the loaded ensemble predicts
    assert main(["evaluate", str(out), "--data", str(tiny_data["valid"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macro_f1"] == recorded["macro_f1"]

    moved = tmp_path / "elsewhere" / "ens"
    shutil.move(str(out), moved)
    for m in two_models:
        shutil.rmtree(m)
    ens = load(moved)
    np.testing.assert_allclose(ens.predict_proba(texts), direct, atol=1e-6)
    assert main(["evaluate", str(moved), "--data", str(tiny_data["test"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics["by_direction"]) == {"members/m0", "members/m1"}
    assert main(["predict", str(moved), "--data", str(tiny_data["test"]), "--out", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().count("\n") == 46


@pytest.mark.slow
def test_ensemble_errors(two_models, tiny_data, tmp_path, capsys):
    with pytest.raises(UlmfitError, match="at least two"):
        build_ensemble(two_models[:1], tiny_data["valid"], tmp_path / "e")
    with pytest.raises(UlmfitError, match="is \\(or holds\\) the member"):
        build_ensemble(two_models, tiny_data["valid"], two_models[0])
    other = tmp_path / "other.csv"
    other.write_text("text,label\nhello,x\nbye,y\n")
    with pytest.raises(UlmfitError, match="not classes of the members"):
        build_ensemble(two_models, other, tmp_path / "e")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    code = main(["ensemble", *map(str, two_models), "--valid", str(tiny_data["valid"]), "--out", str(tmp_path / "busy")])
    assert code == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_ensemble_marker_is_validated_and_overwrite_swaps(two_models, tiny_data, tmp_path):
    out = tmp_path / "ens"
    build_ensemble(two_models, tiny_data["valid"], out)
    before = load(out).predict_proba(["great"])
    build_ensemble(list(reversed(two_models)), tiny_data["valid"], out, overwrite=True)  # replaced whole
    np.testing.assert_allclose(load(out).predict_proba(["great"]), before, atol=1e-6)
    assert not any(p.name.startswith(".ens") for p in tmp_path.iterdir())  # no staging or lock left behind
    marker = json.loads((out / "ulmfit.json").read_text())
    marker["members"][0]["path"] = "../elsewhere"
    (out / "ulmfit.json").write_text(json.dumps(marker))
    with pytest.raises(UlmfitError, match="inside the ensemble"):
        load(out)
