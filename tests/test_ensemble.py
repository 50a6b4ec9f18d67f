"""`ulmfit ensemble`: weights chosen on validation, probabilities averaged with them, the folder
predicts / evaluates / reloads like any model folder, also after being moved with its sources gone."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from math import comb

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_fit_config
from ulmfit.cli import main
from ulmfit.errors import UlmfitError
from ulmfit.recipes.ensemble import (build_ensemble, choose_weights, fixed_weights, grid_for, selection_line,
                                     simplex_grid)
from ulmfit.recipes.fit import fit
from ulmfit.recipes.predictor import load
from ulmfit.train.calibration import apply
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


def member(y, rng, strength=1.5, k=3):
    """A classifier's probabilities: softmax(strength * one-hot(true class) + N(0, 1) noise), the noise
    drawn independently for every member (so members err on different rows)."""
    z = strength * np.eye(k)[y] + rng.normal(0.0, 1.0, (len(y), k))
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def correlated_members(y, rng, k, sd):
    """k members of one strength whose errors mostly coincide: one shared N(0, 1) noise (drawn first), plus
    N(0, sd) of each member's own."""
    shared = rng.normal(0.0, 1.0, (len(y), 3))
    out = []
    for _ in range(k):
        z = 1.5 * np.eye(3)[y] + shared + rng.normal(0.0, sd, (len(y), 3))
        out.append(np.exp(z) / np.exp(z).sum(1, keepdims=True))
    return out


def f1_of(y, p):
    return classification_metrics(y, p.argmax(1), CLASSES)["macro_f1"]


def test_complementary_members_get_a_real_mix():
    """Two members of one strength with independent errors and a guesser: the default fallback averages the
    two and leaves the guesser out; against the "best member" fallback the best grid point wins out of fold."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    probs = [member(y, rng), member(y, rng), rng.dirichlet(np.ones(3), len(y))]  # two independent members + noise
    w, sel = choose_weights(probs, y, CLASSES)
    assert sel["rule"] == "top average" and w.tolist() == [0.5, 0.5, 0.0] and sorted(sel["top_members"]) == [0, 1]
    w, sel = choose_weights(probs, y, CLASSES, anchor="best member")
    assert sel["rule"] == "blend" and sel["points"] == 66 and w.sum() == pytest.approx(1.0)
    assert w[0] >= 0.2 and w[1] >= 0.2  # both contribute
    o = sel["out_of_fold"]
    assert o["gain"] > 0 and o["gain_positive_share"] >= o["confidence"] and o["blend_macro_f1"] > o["best_member_macro_f1"]
    # the blend's weights are the best grid point on all the rows, and beat every member there
    best = max(f1_of(y, np.tensordot(v, np.stack(probs), 1)) for v in simplex_grid(3, 10))
    assert sel["macro_f1"] == pytest.approx(best) == pytest.approx(f1_of(y, np.tensordot(w, np.stack(probs), 1)))
    assert sel["macro_f1"] > max(f1_of(y, p) for p in probs)


@pytest.mark.parametrize("n_noise", [1, 2])
def test_a_noise_member_leaves_the_best_member_alone(n_noise):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    noise = [rng.dirichlet(np.ones(3), len(y)) for _ in range(n_noise)]
    probs = [*noise, member(y, rng, strength=2.0)]  # the real member last: its place does not matter
    w, sel = choose_weights(probs, y, CLASSES)
    assert sel["rule"] == "best member" and sel["best_member"] == n_noise
    assert w.tolist() == [0.0] * n_noise + [1.0]
    assert sel["out_of_fold"]["gain_positive_share"] < sel["out_of_fold"]["confidence"]
    # A perfect member alone: all the weight goes to it.
    perfect = np.eye(3)[y] * 0.98 + 0.01 / 1.5
    w, sel = choose_weights([probs[0], perfect], y, CLASSES)
    assert w.tolist() == [0.0, 1.0]


def test_the_old_rule_overfits_where_the_new_one_does_not():
    """A member that is only noise still wins grid points by luck on the rows it was chosen on: the
    best of 66 points on the validation rows beats the real member there (the old rule took it), but
    not out of fold, and the new rule keeps the real member."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    probs = [member(y, rng, strength=1.0), rng.dirichlet(np.ones(3), len(y)), rng.dirichlet(np.ones(3), len(y))]
    w, sel = choose_weights(probs, y, CLASSES)
    blend = np.array(sel["blend_weights"])  # what the old rule chose: the best grid point in sample
    assert blend[1:].sum() > 0 and f1_of(y, np.tensordot(blend, np.stack(probs), 1)) > f1_of(y, probs[0])
    assert sel["out_of_fold"]["gain"] < 0  # out of fold the lucky mix loses to the member
    assert sel["rule"] == "best member" and w.tolist() == [1.0, 0.0, 0.0]


def test_members_are_scored_and_mixed_by_their_own_decision_rules():
    """Imbalanced classes (55/40/5): member A is the better model but, like a class-weighted model after
    calibration, its argmax almost never answers the rare class; its tuned rule (a bias) does. Member B
    has no rule and a weaker signal. Scored by argmax, B wins; by what each decides, A does, and the
    ensemble's saved rule reproduces A's decisions exactly."""
    from ulmfit.recipes.ensemble import decision_rule
    from ulmfit.train.calibration import decide

    rng = np.random.default_rng(4)
    y = rng.choice(3, 2000, p=[0.55, 0.40, 0.05])
    shift = np.array([0.0, 0.0, -6.0])  # the rare class pushed down, as BCTS restores the true prior
    z = 3.0 * np.eye(3)[y] + rng.normal(0.0, 1.0, (len(y), 3)) + shift
    a = np.exp(z - z.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    b = member(y, rng, strength=2.0)
    biases = np.array([-shift, np.zeros(3)])
    f1 = lambda pred: classification_metrics(y, pred, CLASSES)["macro_f1"]
    assert f1(a.argmax(1)) < f1(b.argmax(1)) < f1(decide(a, biases[0]))  # the argmax would pick B

    w_argmax, _ = choose_weights([a, b], y, CLASSES)
    w, sel = choose_weights([a, b], y, CLASSES, biases=biases)
    assert w_argmax[1] > w_argmax[0] and w.tolist() == [1.0, 0.0], (w_argmax, w)
    rule = decision_rule(w, biases, ["A", "B"])
    assert rule["bias"] == biases[0].tolist() and rule["source"] == "A's rule"
    avg = np.tensordot(w, np.stack([a, b]), 1).astype(np.float32)
    assert (apply(avg, rule)[1] == decide(a.astype(np.float32), biases[0])).all()  # exactly A's decisions
    assert sel["macro_f1"] == pytest.approx(f1(apply(avg, rule)[1]))
    # a blend carries both rules, weighted: here half of A's
    half = decision_rule(np.array([0.5, 0.5]), biases, ["A", "B"])
    assert half["bias"] == pytest.approx((0.5 * biases[0]).tolist()) and half["source"].startswith("the weighted rules")
    assert decision_rule(np.array([0.5, 0.5]), np.zeros((2, 3)), ["A", "B"]) is None  # argmax members: no file


def test_a_blend_is_calibrated_and_decides_as_before():
    """Two calibrated members with independent errors: their average is under-confident (the issue-21
    finding on the 40/55/5 tweets). `blend_calibration` scales it (plain T or BCTS, as a single model),
    which lowers the calibration error on validation and on fresh rows, and carries the members' rule
    onto the scaled probabilities: every label stays what the uncalibrated blend decided. A member kept
    alone keeps its own rule untouched (already calibrated)."""
    from ulmfit.recipes.ensemble import blend_calibration, decision_rule, weighted
    from ulmfit.train.calibration import ece, fit_temperature, scale

    rng = np.random.default_rng(7)

    def draw(n):
        y = rng.choice(3, n, p=[0.55, 0.40, 0.05])
        members = []
        for _ in range(2):
            z = 2.0 * np.eye(3)[y] + rng.normal(0.0, 1.2, (n, 3))
            members.append(np.exp(z) / np.exp(z).sum(1, keepdims=True))
        return y, members

    y, (a, b) = draw(3000)
    y_new, (a_new, b_new) = draw(3000)
    temps = [fit_temperature(m, y) for m in (a, b)]  # each member calibrated on validation, as fit leaves it
    a, b, a_new, b_new = scale(a, temps[0]), scale(b, temps[1]), scale(a_new, temps[0]), scale(b_new, temps[1])
    biases = np.array([[0.0, 0.0, 1.0], [0.0, 0.2, 0.6]])  # the members' tuned rules (favouring the rare class)
    w = np.array([0.5, 0.5])
    rule = decision_rule(w, biases, ["A", "B"])
    cal = blend_calibration(weighted([a, b], w), y, CLASSES, w, rule)
    assert cal["temperature"] < 1.0  # sharpened: the average was under-confident
    assert cal["valid"]["ece_after"] < cal["valid"]["ece_before"]
    blend_new = weighted([a_new, b_new], w)
    assert ece(apply(blend_new, cal)[0], y_new) < ece(apply(blend_new, rule)[0], y_new)  # also on rows it never saw
    assert (apply(blend_new, cal)[1] == apply(blend_new, rule)[1]).all()  # the same labels
    assert cal["members_bias"] == rule["bias"] and cal["decision_rule"] == "members"
    assert cal["valid"]["macro_f1_rule"] == pytest.approx(classification_metrics(y, apply(weighted([a, b], w), rule)[1],
                                                                                 CLASSES)["macro_f1"])
    plain = blend_calibration(weighted([a, b], w), y, CLASSES, w, None)  # argmax members: the blend's argmax
    assert (apply(blend_new, plain)[1] == blend_new.argmax(1)).all() and plain["decision_rule"] == "none"
    alone = np.array([1.0, 0.0])
    assert blend_calibration(weighted([a, b], alone), y, CLASSES, alone, decision_rule(alone, biases, ["A", "B"])) \
        == decision_rule(alone, biases, ["A", "B"])


def test_the_equal_anchor_keeps_the_plain_average_of_members_validation_cannot_tell_apart():
    """Two members of one strength whose errors mostly coincide (the e-mail's AWD-LSTM pair and MiniLM
    model: 8 and 13 validation errors of 588): no blend beats the better one beyond noise, so the "best
    member" anchor keeps one member alone, and no member beats the plain average, so the "equal" anchor
    keeps that. A member that clearly beats the average (a noise partner) is kept by both anchors."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    probs = correlated_members(y, rng, 2, sd=0.2)
    w, sel = choose_weights(probs, y, CLASSES, anchor="best member")
    assert sel["rule"] == "best member" and sorted(w.tolist()) == [0.0, 1.0]
    w, sel = choose_weights(probs, y, CLASSES, anchor="equal")
    assert sel["rule"] == "equal" and w.tolist() == [0.5, 0.5] and sel["anchor"] == "equal"
    o = sel["out_of_fold"]
    assert o["gain_positive_share"] < o["confidence"] and {"equal_macro_f1", "best_member_macro_f1"} <= set(o)
    noise = rng.dirichlet(np.ones(3), len(y))
    for anchor in ("best member", "equal"):
        w, sel = choose_weights([noise, member(y, rng, strength=2.0)], y, CLASSES, anchor=anchor)
        assert sel["rule"] == "best member" and w.tolist() == [0.0, 1.0], anchor


def test_the_top_average_anchor_averages_the_members_validation_cannot_tell_from_the_best():
    """Three members of one strength whose errors mostly coincide and one that guesses (a member clearly
    behind, like a TF-IDF model beside two neural ones): the "top average" anchor drops the guesser and
    averages the other three, 1/3 each (off the grid of tenths, so added exactly), where "equal" would
    give the guesser a quarter. With one member clearly ahead of the rest it is the "best member" anchor."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 300)
    tied = correlated_members(y, rng, 3, sd=0.2)
    guesser = rng.dirichlet(np.ones(3), len(y))
    w, sel = choose_weights([tied[0], tied[1], guesser, tied[2]], y, CLASSES, anchor="top average")
    assert sel["rule"] == "top average" and sel["anchor"] == "top average" and w.tolist() == [1 / 3, 1 / 3, 0.0, 1 / 3]
    assert sorted(sel["top_members"]) == [0, 1, 3] and sel["best_beats_share"][2] >= sel["out_of_fold"]["confidence"]
    assert max(s for j, s in enumerate(sel["best_beats_share"]) if j != 2) < sel["out_of_fold"]["confidence"]
    line = selection_line(sel)
    assert "top_average_macro_f1" in sel["out_of_fold"] and f"average of members {', '.join(map(str, sel['top_members']))}" \
        in line and "the others are behind it beyond noise" in line
    w, sel = choose_weights([guesser, member(y, rng, strength=2.0)], y, CLASSES, anchor="top average")
    assert sel["anchor"] == "best member" and sel["top_members"] == [1] and w.tolist() == [0.0, 1.0]


def test_the_equal_point_is_exact_when_it_is_off_the_grid():
    """1/3 is not a multiple of 1/10: three members of one strength get exactly 1/3 each."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 300)
    probs = correlated_members(y, rng, 3, sd=0.2)
    w, sel = choose_weights(probs, y, CLASSES, anchor="equal")
    assert sel["rule"] == "equal" and w.tolist() == [1 / 3] * 3 and sel["points"] == 66
    with pytest.raises(ValueError, match="anchor"):
        choose_weights(probs, y, CLASSES, anchor="median")


def test_weight_choice_is_deterministic_and_fast_enough_to_rerun():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    probs = [member(y, rng), member(y, rng, 1.2), member(y, rng, 0.8)]
    a, b = choose_weights(probs, y, CLASSES), choose_weights([p.copy() for p in probs], y.copy(), CLASSES)
    assert a[0].tolist() == b[0].tolist() and json.dumps(a[1]) == json.dumps(b[1])


def test_too_small_a_validation_split_is_one_clear_error():
    y = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(UlmfitError, match="needs at least 10.*larger --valid"):
        choose_weights([np.eye(3)[y], np.eye(3)[y]], y, CLASSES)


def test_fixed_weights_are_parsed_and_scaled():
    assert fixed_weights("equal", 3).tolist() == pytest.approx([1 / 3] * 3)
    assert fixed_weights(" Equal ", 2).tolist() == [0.5, 0.5]
    assert fixed_weights("3,1", 2).tolist() == [0.75, 0.25]
    assert fixed_weights("0,2", 2).tolist() == [0.0, 1.0]
    for bad in ("0.5", "1,2,3", "-1,2", "0,0", "a,b", "nan,1", "1,,1"):
        with pytest.raises(UlmfitError, match="--weights .*one per model folder"):
            fixed_weights(bad, 2)


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
    err = capsys.readouterr().err
    assert "weights" in err and "rule: " in err and "out-of-fold macro-F1" in err
    marker = json.loads((out / "ulmfit.json").read_text())
    weights = [m["weight"] for m in marker["members"]]
    assert marker["kind"] == "ensemble" and sum(weights) == pytest.approx(1.0)
    texts = ["Great flight thanks", "the gate was awful", "monday schedule boston"]
    direct = sum(w * load(m).predict_proba(texts) for w, m in zip(weights, two_models))
    if max(weights) < 1:  # a blend hands out its calibrated probabilities (blend_calibration)
        direct = apply(direct, json.loads((out / "calibration.json").read_text()))[0]
    np.testing.assert_allclose(load(out).predict_proba(texts), direct, atol=1e-6)
    recorded = json.loads((out / "valid_metrics.json").read_text())  # chosen on what the loaded ensemble predicts
    assert recorded["selection"]["rule"] in ("blend", "best member", "top average") and recorded["weights"] == weights
    assert recorded["selection"]["out_of_fold"]["repeats"] == 10 and "rule: " in (out / "report.md").read_text()
    # the recorded figure is exactly what evaluating the folder gives, at the precision it was built with
    assert main(["evaluate", str(out), "--data", str(tiny_data["valid"]), "--json", "--precision", "fp32"]) == 0
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
def test_the_anchor_is_chosen_on_the_command_line(two_models, tiny_data, tmp_path, capsys):
    out = tmp_path / "ens"
    args = ["ensemble", *map(str, two_models), "--valid", str(tiny_data["valid"]), "--out", str(out)]
    assert main(args + ["--anchor", "median"]) == 2 and not out.exists()
    assert "--anchor median: choose one of best-member, equal, best-member-or-equal" in capsys.readouterr().err
    assert main(args + ["--anchor", "equal", "--weights", "equal"]) == 2 and not out.exists()
    assert "pass one of the two" in capsys.readouterr().err
    assert main(args + ["--anchor", "best-member-or-equal"]) == 0
    selection = json.loads((out / "valid_metrics.json").read_text())["selection"]
    o = selection["out_of_fold"]
    kept = "equal" if o["equal_macro_f1"] >= o["best_member_macro_f1"] else "best member"  # the better out of fold
    assert selection["anchor"] == kept and selection["challenger"] == "blend"
    assert selection["rule"] in (kept, "blend") and f"vs {kept} " in capsys.readouterr().err


@pytest.mark.slow
def test_fixed_weights_average_the_members_as_given(two_models, tiny_data, tmp_path, capsys):
    out = tmp_path / "ens"
    args = ["ensemble", *map(str, two_models), "--valid", str(tiny_data["valid"]), "--out", str(out)]
    assert main(args + ["--weights", "1,2,3"]) == 2  # one number per folder, said before anything is copied
    assert "--weights 1,2,3: give 'equal' or 2 non-negative numbers" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--weights", "equal"]) == 0
    assert "rule: fixed weights (--weights equal)" in capsys.readouterr().err
    marker = json.loads((out / "ulmfit.json").read_text())
    assert [m["weight"] for m in marker["members"]] == [0.5, 0.5]
    texts = ["Great flight thanks", "the gate was awful", "monday schedule boston"]
    raw = sum(0.5 * load(m).predict_proba(texts) for m in two_models)  # before the blend's own calibration
    np.testing.assert_allclose(load(out).predict_proba_raw(texts), raw, atol=1e-6)
    recorded = json.loads((out / "valid_metrics.json").read_text())
    assert recorded["selection"]["rule"] == "fixed" and recorded["weights"] == [0.5, 0.5]
    assert "weights given (--weights equal)" in (out / "report.md").read_text()
    assert main(["evaluate", str(out), "--data", str(tiny_data["valid"]), "--json", "--precision", "fp32"]) == 0
    assert json.loads(capsys.readouterr().out)["macro_f1"] == recorded["macro_f1"]


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
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob("*staging*"))  # nothing half-built left
    lm = tmp_path / "lm"
    shutil.copytree(two_models[0], lm)
    marker = json.loads((lm / "ulmfit.json").read_text())
    (lm / "ulmfit.json").write_text(json.dumps({**marker, "kind": "lm"}))
    with pytest.raises(UlmfitError, match="holds a lm model, not a classifier"):
        build_ensemble([two_models[0], lm], tiny_data["valid"], tmp_path / "e")
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


@pytest.mark.slow
def test_an_ensemble_folder_of_the_previous_release_still_loads(two_models, tiny_data, tmp_path, capsys):
    """Written as `ulmfit ensemble` wrote it before the out-of-fold rule: the same marker, a
    valid_metrics.json without "selection"; it loads, predicts its weighted average and evaluates."""
    out = tmp_path / "old-ens"
    for i, m in enumerate(two_models):
        shutil.copytree(m, out / "members" / f"m{i}")
    marker = {"format": "ulmfit-model", "version": 1, "kind": "ensemble", "ulmfit_version": "0.1.0",
              "classes": load(two_models[0]).classes,
              "members": [{"path": "members/m0", "weight": 0.3, "source": str(two_models[0])},
                          {"path": "members/m1", "weight": 0.7, "source": str(two_models[1])}],
              "metric": "macro_f1", "valid": str(tiny_data["valid"])}
    (out / "ulmfit.json").write_text(json.dumps(marker))
    (out / "valid_metrics.json").write_text(json.dumps({"macro_f1": 0.5, "weights": [0.3, 0.7]}))
    texts = ["Great flight thanks", "the gate was awful"]
    direct = 0.3 * load(two_models[0]).predict_proba(texts) + 0.7 * load(two_models[1]).predict_proba(texts)
    np.testing.assert_allclose(load(out).predict_proba(texts), direct, atol=1e-6)
    assert main(["evaluate", str(out), "--data", str(tiny_data["test"]), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["by_direction"]) == {"members/m0", "members/m1"}


@pytest.mark.slow
def test_an_ensemble_that_keeps_one_member_predicts_exactly_that_member(two_models, tiny_data, tmp_path, monkeypatch):
    """Weight 1 on a member with a tuned decision rule: the ensemble takes that rule too, so its labels
    (not only its probabilities) are the member's."""
    from ulmfit.recipes import ensemble

    member = load(two_models[1], precision="fp32")  # as the ensemble is built: comparisons are exact
    texts = pd.read_csv(tiny_data["test"])["text"].tolist()
    probs = member.predict_proba(texts)
    cal_path = two_models[1] / "calibration.json"
    cal = json.loads(cal_path.read_text()) if cal_path.exists() else {"format": 1, "temperature": 1.0}
    bias = np.zeros(len(member.classes))
    bias[int(np.argmin(probs.mean(0)))] = 1.0  # favour the least predicted class: some labels change
    cal_path.write_text(json.dumps({**cal, "decision_rule": "bias", "bias": bias.tolist()}))
    member = load(two_models[1], precision="fp32")
    assert member.predict(texts) != [member.classes[i] for i in member.predict_proba(texts).argmax(1)]

    real = ensemble.choose_weights

    def keep_the_second(probs, y, classes, grid=10, biases=None, anchor=None):
        w, sel = real(probs, y, classes, grid, biases)
        return np.array([0.0, 1.0]), {**sel, "rule": "best member", "best_member": 1}

    monkeypatch.setattr(ensemble, "choose_weights", keep_the_second)
    out = tmp_path / "ens"
    build_ensemble(two_models, tiny_data["valid"], out)
    ens = load(out, precision="fp32")
    dropped = ens.parts["members/m0"]  # weight 0: never run to predict (it cannot change a label)
    monkeypatch.setattr(dropped, "predict_proba", lambda *a, **k: pytest.fail("a weight-0 member was run"))
    assert ens.predict(texts) == member.predict(texts)
    np.testing.assert_allclose(ens.predict_proba(texts), member.predict_proba(texts), atol=1e-6)
    monkeypatch.undo()  # evaluate reports every member, the dropped one too
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["temperature"] == 1.0 and saved["bias"] == [float(bias[member.classes.index(c)]) for c in ens.classes]
    valid = pd.read_csv(tiny_data["valid"])
    recorded = json.loads((out / "valid_metrics.json").read_text())["macro_f1"]
    alone = member.evaluate(valid["text"].tolist(), valid["label"].tolist())["macro_f1"]
    assert recorded == alone
    # evaluate reports each member as it predicts alone, by its own rule
    assert ens.evaluate(valid["text"].tolist(), valid["label"].tolist())["by_direction"]["members/m1"]["macro_f1"] == alone


@pytest.mark.slow
def test_a_blended_ensemble_folder_hands_out_calibrated_probabilities(two_models, tiny_data, tmp_path, monkeypatch,
                                                                       capsys):
    """A blend (forced here: tiny models rarely earn one): calibration.json holds the blend's calibration;
    the folder hands out the calibrated blend and decides exactly as the uncalibrated blend with the
    members' weighted rules would; valid_metrics.json, evaluate and report.md agree on it."""
    from ulmfit.recipes import ensemble
    from ulmfit.train.calibration import decide

    real = ensemble.choose_weights

    def blend(probs, y, classes, grid=10, biases=None, anchor=None):
        w, sel = real(probs, y, classes, grid, biases)
        return np.array([0.5, 0.5]), {**sel, "rule": "blend"}

    monkeypatch.setattr(ensemble, "choose_weights", blend)
    out = tmp_path / "ens"
    build_ensemble(two_models, tiny_data["valid"], out)
    ens = load(out, precision="fp32")
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["temperature"] > 0 and cal["valid"]["nll_after"] <= cal["valid"]["nll_before"] + 1e-9  # fitted by NLL
    texts = pd.read_csv(tiny_data["test"])["text"].tolist()
    members = [load(m, precision="fp32") for m in two_models]
    raw = sum(0.5 * m.predict_proba(texts)[:, [m.classes.index(c) for c in ens.classes]] for m in members)
    np.testing.assert_allclose(ens.predict_proba_raw(texts), raw, atol=1e-6)
    np.testing.assert_allclose(ens.predict_proba(texts), apply(raw, cal)[0], atol=1e-6)
    rules = np.stack([m.bias_in(ens.classes) for m in members])
    assert ens.predict(texts) == [ens.classes[i] for i in decide(raw, 0.5 * rules.sum(0))]  # labels as before
    recorded = json.loads((out / "valid_metrics.json").read_text())
    assert recorded["ece_after"] == cal["valid"]["ece_after"] and recorded["temperature"] == cal["temperature"]
    assert main(["evaluate", str(out), "--data", str(tiny_data["valid"]), "--json", "--precision", "fp32"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["macro_f1"] == recorded["macro_f1"]
    assert evaluated["ece_after"] == pytest.approx(cal["valid"]["ece_after"], abs=1e-6)
    assert "Calibration of the blend" in (out / "report.md").read_text()
