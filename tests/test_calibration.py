"""Imbalanced classes (issue 21): the weighting rule, temperature scaling, the tuned decision rule
(saved, reloaded and applied identically by predict and evaluate) and the degenerate-model check."""
from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ulmfit.errors import UlmfitError
from ulmfit.recipes.config import ImbalanceConfig
from ulmfit.train.calibration import (apply, class_weights, constant_baseline, decide,
                                      degenerate_check, ece, fit_bcts, fit_posthoc, fit_temperature, log_prior,
                                      macro_f1, nll, scale, summary_lines, tune_bias, tuned_macro_f1,
                                      weighting_rule)
from ulmfit.train.metrics import better
from ulmfit.train.tasks import ClassLoss, imbalance_loss, score_probs

CFG = ImbalanceConfig()


def labels_of(counts, seed=0):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


# ------------------------------------------------------------------------------------ weighting

def test_weighting_is_off_for_balanced_data_and_on_past_the_ratio():
    balanced, near, imbalanced = labels_of([100, 100, 100]), labels_of([100, 80, 70]), labels_of([400, 550, 50])
    assert weighting_rule("auto", balanced, 3, CFG) == "none"
    assert weighting_rule("auto", near, 3, CFG) == "none"  # 100/70 = 1.43 <= 1.5
    assert weighting_rule("auto", imbalanced, 3, CFG) == CFG.rule
    assert weighting_rule("auto", imbalanced, 3, replace(CFG, ratio=20.0)) == "none"
    assert weighting_rule("none", imbalanced, 3, CFG) == "none"  # --set clf.class_weights=none
    for off in (imbalance_loss("auto", balanced, 3, CFG), imbalance_loss("none", imbalanced, 3, CFG)):
        assert off.weight is None and off.shift is None  # plain cross-entropy
    with pytest.raises(UlmfitError, match="class_weights"):
        weighting_rule("inverse", imbalanced, 3, CFG)


def test_logit_adjusted_loss_shifts_by_the_log_prior_and_weights_nothing():
    import torch

    y = labels_of([400, 550, 50])
    loss = imbalance_loss("adjusted", y, 3, CFG)
    assert loss.weight is None and class_weights(y, 3, "adjusted") is None
    np.testing.assert_allclose(loss.shift.numpy(), np.log([0.4, 0.55, 0.05]), rtol=1e-6)
    assert np.isfinite(log_prior([0, 0, 1], 3)).all()  # a class absent from training stays finite
    assert imbalance_loss("auto", y, 3, replace(CFG, rule="adjusted")).shift is not None  # auto past the ratio
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 3, generator=g), torch.randint(0, 3, (64,), generator=g)
    # Menon et al. eq. 10: cross-entropy of logits + log prior, i.e. of p_y * prior_y renormalised
    want = torch.nn.functional.cross_entropy(logits + torch.log(torch.tensor([0.4, 0.55, 0.05])), labels)
    assert torch.allclose(loss(logits, labels), want, atol=1e-6)
    # the rare class's example costs more than under plain cross-entropy, a common class's less
    even = torch.zeros(1, 3)
    assert loss(even, torch.tensor([2])) > ClassLoss()(even, torch.tensor([2]))
    assert loss(even, torch.tensor([1])) < ClassLoss()(even, torch.tensor([1]))


@pytest.mark.parametrize("rule", ["balanced", "effective"])
def test_class_weights_favour_the_rare_class_and_keep_the_loss_scale(rule):
    y = labels_of([400, 550, 50])
    w = class_weights(y, 3, rule, beta=0.999)
    counts = np.bincount(y)
    assert w[2] > w[0] > w[1]  # rarer class, larger weight
    assert np.isclose((w * counts).sum(), counts.sum())  # mean weight over the examples is 1
    if rule == "balanced":
        assert np.allclose(w * counts, counts.sum() / 3)  # every class weighs the same in all
    w4 = class_weights(labels_of([400, 550, 50, 0]), 4, rule)
    assert w4[3] == 0  # a class absent from training gets no weight


def test_effective_number_lies_between_uniform_and_inverse_frequency():
    y = labels_of([8000, 11000, 1000])  # large counts: effective numbers saturate towards 1/(1-beta)
    bal, eff = class_weights(y, 3, "balanced"), class_weights(y, 3, "effective", beta=0.999)
    assert 1 < eff[2] / eff[1] < bal[2] / bal[1]
    small = labels_of([40, 55, 5])  # small counts: effective number ~ count, so ~ inverse frequency
    assert np.allclose(class_weights(small, 3, "effective", 0.999), class_weights(small, 3, "balanced"), rtol=0.05)


def test_imbalance_config_rejects_bad_values():
    for bad in (dict(ratio=0.5), dict(rule="inverse"), dict(beta=1.0), dict(decision_rule="threshold"),
                dict(temperature="yes"), dict(repeats=0)):
        with pytest.raises(UlmfitError, match="imbalance"):
            ImbalanceConfig(**bad)


# ------------------------------------------------------------------------------------ calibration

def synthetic(n, k=3, sharpen=1.0, seed=0, priors=(0.4, 0.55, 0.05)):
    """Labels drawn from softmax(true logits) (a calibrated model's probabilities), and the
    probabilities of a model whose logits are `sharpen` times the true ones (over-confident if > 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, k)) + np.log(priors)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    q = np.exp(sharpen * (logits - logits.max(1, keepdims=True)))
    return q / q.sum(1, keepdims=True), y


def test_temperature_scaling_lowers_the_calibration_error_of_an_overconfident_model():
    valid, yv = synthetic(3000, sharpen=3.0, seed=1)
    test, yt = synthetic(3000, sharpen=3.0, seed=2)
    t = fit_temperature(valid, yv)
    assert 2.5 < t < 3.5  # recovers the factor the logits were sharpened by
    assert ece(scale(test, t), yt) < 0.5 * ece(test, yt)  # on held-out data
    calibrated, yc = synthetic(3000, sharpen=1.0, seed=3)
    assert 0.85 < fit_temperature(calibrated, yc) < 1.15  # a calibrated model keeps T ~ 1
    assert np.array_equal(scale(test, t).argmax(1), test.argmax(1))  # T never changes the argmax


def test_ece_is_zero_for_a_perfectly_calibrated_bin_and_large_for_a_confident_wrong_one():
    probs = np.array([[0.75, 0.25]] * 4)
    assert ece(probs, [0, 0, 0, 1]) == pytest.approx(0.0)
    assert ece(np.array([[0.99, 0.01]] * 4), [1, 1, 1, 1]) == pytest.approx(0.99)


def test_tuned_bias_raises_macro_f1_of_a_model_that_underpredicts_the_rare_class():
    probs, y = synthetic(4000, seed=4)
    probs = probs * np.array([1.0, 1.0, 0.15])  # the rare class's probability squashed: rarely predicted
    probs /= probs.sum(1, keepdims=True)
    bias = tune_bias(probs[:2000], y[:2000])
    assert bias[0] == 0 and bias[2] > 0.5
    before, after = macro_f1(y[2000:], probs[2000:].argmax(1), 3), macro_f1(y[2000:], decide(probs[2000:], bias), 3)
    assert after > before + 0.03  # on the held-out half


def test_the_tuned_metric_scores_an_epoch_by_its_decisions_after_the_rule_not_its_argmax():
    # two epochs of one model: the rare class squashed (argmax rarely predicts it; the tuned rule undoes
    # that) and a blurred copy whose argmax is better but which knows less. macro_f1 keeps the blurred
    # epoch; macro_f1_tuned, what predict will do with each, keeps the informative one.
    probs, y = synthetic(4000, seed=6)
    squashed = probs * np.array([1.0, 1.0, 0.1])
    squashed /= squashed.sum(1, keepdims=True)
    rng = np.random.default_rng(0)
    blurred = probs * np.array([1.0, 1.0, 2.0]) + rng.dirichlet(np.ones(3), len(y)) * 1.2
    blurred /= blurred.sum(1, keepdims=True)
    a, b = score_probs(squashed, y, ["n", "u", "p"]), score_probs(blurred, y, ["n", "u", "p"])
    assert a["macro_f1"] < b["macro_f1"] and a["macro_f1_tuned"] > b["macro_f1_tuned"]
    assert better("macro_f1_tuned") == "max"
    # scored out of half: near what a rule tuned on other rows gives on these, not the in-sample optimum
    held = macro_f1(y[2000:], decide(squashed[2000:], tune_bias(squashed[:2000], y[:2000])), 3)
    assert abs(a["macro_f1_tuned"] - held) < 0.03 and a["macro_f1_tuned"] > a["macro_f1"] + 0.03
    # a model that knows nothing gains nothing from a rule tuned on other rows
    noise = rng.dirichlet(np.ones(3), len(y))
    assert tuned_macro_f1(noise, y, 3) < 0.4
    assert tuned_macro_f1(np.eye(3)[y] * 0.8 + 0.2 / 3, y, 3) == 1.0
    assert np.isnan(tuned_macro_f1(np.zeros((0, 3)), [], 3))


def test_fit_posthoc_keeps_a_rule_only_when_it_helps_out_of_sample():
    probs, y = synthetic(2000, seed=5)
    squashed = probs * np.array([1.0, 1.0, 0.15])
    squashed /= squashed.sum(1, keepdims=True)
    post = fit_posthoc(squashed, y, ["neg", "neu", "pos"], CFG)
    assert post["decision_rule"] == "bias" and post["selection"]["gain_mean"] > 0
    assert post["valid"]["macro_f1_rule"] > post["valid"]["macro_f1_argmax"]
    json.dumps(post)  # saved as calibration.json
    off = fit_posthoc(squashed, y, ["neg", "neu", "pos"], replace(CFG, decision_rule="none", temperature=False))
    assert off["bias"] is None and off["temperature"] == 1.0
    cal, pred = apply(squashed, off)
    assert np.allclose(cal, squashed, atol=1e-6) and np.array_equal(pred, squashed.argmax(1))
    # a model whose argmax is already right for every example gains nothing from a rule
    perfect = np.eye(3)[y] * 0.8 + 0.2 / 3
    assert fit_posthoc(perfect, y, ["a", "b", "c"], CFG)["bias"] is None


def prior_shifted(n, seed, inflate=16.0, sharpen=0.8):
    """A model trained with a class-weighted loss on 40/55/5 data: its probabilities are those of a
    slightly under-confident model with the rare class inflated `inflate` times (a prior shift)."""
    q, y = synthetic(n, sharpen=sharpen, seed=seed)
    q = q * np.array([1.0, 1.0, inflate])
    return q / q.sum(1, keepdims=True), y


def test_bcts_undoes_a_prior_shift_that_temperature_alone_cannot_and_is_chosen():
    valid, yv = prior_shifted(3000, seed=11)
    test, yt = prior_shifted(3000, seed=12)
    t = fit_temperature(valid, yv)
    tb, c = fit_bcts(valid, yv)
    assert c[0] == 0 and c[2] < -2.0  # the inflated class is pulled back (log 16 ~ 2.8, less T's share)
    raw_e, t_e, b_e = ece(test, yt), ece(scale(test, t), yt), ece(scale(test, tb, c), yt)
    t_n, b_n = nll(scale(test, t), yt), nll(scale(test, tb, c), yt)
    # on held-out data: one T trades the shift against the confidence and stays far off; BCTS does not
    assert b_e < 0.5 * t_e < raw_e and b_n < t_n - 0.1 and t_n > nll(test, yt) - 0.2
    post = fit_posthoc(valid, yv, ["neg", "neu", "pos"], CFG)
    sel = post["calibration_selection"]
    assert post["calibration"] == "bcts" and sel["nll_bcts"] < sel["nll_temperature"]
    assert post["calibration_bias"] == pytest.approx(list(fit_bcts(valid, yv)[1]))
    assert post["valid"]["nll_after"] < post["valid"]["nll_temperature"]
    json.dumps(post)
    lines = "\n".join(summary_lines(post, ["neg", "neu", "pos"]))
    assert "Bias-corrected temperature scaling" in lines and "chosen over plain temperature scaling" in lines


def test_a_well_calibrated_model_keeps_plain_temperature_or_a_negligible_shift():
    probs, y = synthetic(3000, sharpen=1.0, seed=13)
    post = fit_posthoc(probs, y, ["neg", "neu", "pos"], CFG)
    assert post["calibration"] == "temperature" or max(abs(x) for x in post["calibration_bias"]) < 0.1
    if post["calibration"] == "temperature":
        assert post["calibration_bias"] is None and "not kept: out-of-half NLL" in summary_lines(post, list("abc"))[0]


def old_labels(probs, valid, yv, rule: bool):
    """The labels of the post-hoc step before BCTS, computed here from its definition: the decision rule
    r tuned for macro-F1 on softmax(log p / T) (plain T, all validation rows: not few labels), then
    argmax(log p_T + r) on the float32 probabilities (r = 0 when no rule)."""
    t = fit_temperature(valid, yv)
    r = tune_bias(scale(valid, t), yv) if rule else np.zeros(valid.shape[1])
    p_t = scale(probs, t).astype(np.float32)
    return (np.log(np.clip(p_t.astype(np.float64), 1e-12, 1)) + r).argmax(1)


@pytest.mark.parametrize("decision_rule", ["bias", "none"])
def test_the_labels_do_not_depend_on_the_calibration(decision_rule):
    valid, yv = prior_shifted(2000, seed=14, inflate=0.2)  # the rare class squashed: a rule helps
    test, _ = prior_shifted(3000, seed=15, inflate=0.2)
    post = fit_posthoc(valid, yv, ["neg", "neu", "pos"], replace(CFG, decision_rule=decision_rule))
    assert post["calibration"] == "bcts" and not post["few_labels"]
    assert post["decision_rule"] == decision_rule and post["bias"] is not None  # kept / argmax: bias = -c
    cal, pred = apply(test, post)
    expected = old_labels(test, valid, yv, rule=decision_rule == "bias")
    assert np.array_equal(pred, expected)
    if decision_rule == "none":
        assert np.array_equal(pred, test.argmax(1))  # the model's argmax, as before
        assert post["bias"] == pytest.approx([-x for x in post["calibration_bias"]])
    else:
        assert not np.array_equal(pred, test.argmax(1))  # the rule does change labels
    # the handed-out probabilities are BCTS's; whoever decides from them (server, predict --workers) agrees
    assert np.allclose(cal, scale(test, post["temperature"], post["calibration_bias"]), atol=1e-6)
    assert np.array_equal(decide(cal, post["bias"]), pred)
    assert "Decision rule: argmax" in summary_lines(post, list("abc"))[1] or decision_rule == "bias"


def test_an_old_calibration_json_reloads_unchanged_and_a_bad_shift_is_one_clear_line(tmp_path):
    from ulmfit.recipes.predictor import _read_calibration

    probs, y = synthetic(500, seed=16)
    old = {"format": 1, "temperature": 1.7, "decision_rule": "bias", "bias": [0.0, 0.3, 1.2]}  # no calibration_bias
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(old))
    d = _read_calibration(path, 3)
    cal, pred = apply(probs, d)
    p_t = scale(probs, 1.7).astype(np.float32)
    assert np.array_equal(cal, p_t)
    assert np.array_equal(pred, (np.log(np.clip(p_t.astype(np.float64), 1e-12, 1)) + old["bias"]).argmax(1))
    path.write_text(json.dumps({**old, "calibration_bias": None}))
    assert np.array_equal(apply(probs, _read_calibration(path, 3))[1], pred)
    for bad in ([0.0, 1.0], [0.0, "x", 1.0], [0.0, float("nan"), 1.0], "abc", 3):
        path.write_text(json.dumps({**old, "calibration_bias": bad}))
        with pytest.raises(UlmfitError) as e:
            _read_calibration(path, 3)
        msg = str(e.value)
        assert str(path) in msg and "calibration_bias" in msg and "3 finite numbers" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------ degenerate model

def test_degenerate_warning_fires_on_a_constant_predictor_and_not_on_a_good_one():
    y = labels_of([400, 550, 50])
    classes = ["negative", "neutral", "positive"]
    const = constant_baseline(y, 3)
    assert const["class"] == 1 and const["accuracy"] == pytest.approx(0.55)
    check = degenerate_check(np.full(len(y), 1), y, classes)
    assert check["degenerate"] and "no better than always answering 'neutral'" in check["message"]
    assert "try:" in check["message"] and "\n" not in check["message"]
    good = y.copy()
    good[:100] = (good[:100] + 1) % 3  # 90% right, every class predicted
    assert not degenerate_check(good, y, classes)["degenerate"]
    assert degenerate_check(good, y, classes)["message"] is None


# ------------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def imbalanced_model(tmp_path_factory):
    """A tiny model fitted on an imbalanced tiny set (100/100/12) with the defaults of issue 21."""
    from conftest import make_rows, tiny_fit_config
    from ulmfit.recipes.fit import fit

    d = tmp_path_factory.mktemp("imb")

    def imbalanced(n, seed):
        df = make_rows(n, seed)
        pos = df[df.label == "pos"]
        return pd.concat([df[df.label != "pos"], pos.iloc[: max(3, len(pos) // 8)]])

    for name, n, seed in (("train", 300, 0), ("valid", 150, 1), ("test", 150, 2)):
        imbalanced(n, seed).to_csv(d / f"{name}.csv", index=False)
    logs = []
    fit(d / "train.csv", d / "valid.csv", out=d / "model", config=tiny_fit_config(), log=logs.append)
    return d, d / "model", logs


@pytest.mark.slow
def test_fit_records_the_weighting_and_saves_the_calibration(imbalanced_model):
    d, out, logs = imbalanced_model
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["clf"]["class_weights"] == "balanced" and cfg["imbalance"]["ratio"] == ImbalanceConfig().ratio
    assert any("loss weighting balanced" in l for l in logs)
    post = json.loads((out / "calibration.json").read_text())
    assert post["temperature"] > 0 and "constant_baseline" in post
    report = (out / "report.md").read_text()
    assert "expected calibration error" in report and "constant predictor" in report
    vm = json.loads((out / "valid_metrics.json").read_text())
    assert {"ece_before", "ece_after", "temperature", "argmax", "degenerate"} <= set(vm)
    # T minimises the NLL on this very split (T = 1 is among the candidates); the binned ECE usually
    # follows but need not on 150 texts
    assert post["valid"]["nll_after"] <= post["valid"]["nll_before"] + 1e-9


@pytest.mark.slow
def test_the_saved_rule_is_reloaded_and_applied_identically_by_predict_and_evaluate(imbalanced_model, capsys):
    import ulmfit
    from ulmfit.cli import main
    from ulmfit.fileio import atomic_write_json
    from ulmfit.train.metrics import classification_metrics

    d, out, _ = imbalanced_model
    test = pd.read_csv(d / "test.csv")
    texts, truth = test["text"].tolist(), test["label"].tolist()
    # a strong rule towards the rare class, so that the rule visibly changes the labels
    post = json.loads((out / "calibration.json").read_text())
    post.update(temperature=2.0, decision_rule="bias", bias=[0.0, 0.0, 3.0])
    atomic_write_json(out / "calibration.json", post)
    model = ulmfit.load(out)
    raw = model.predict_proba_raw(texts)
    cal, pred = apply(raw, post)
    assert (pred != raw.argmax(1)).any()  # the rule does change some labels
    assert model.predict(texts) == [model.classes[i] for i in pred]
    assert np.allclose(model.predict_proba(texts), cal, atol=1e-6)
    m = model.evaluate(texts, truth)
    index = {c: i for i, c in enumerate(model.classes)}
    expected = classification_metrics([index[t] for t in truth], pred, model.classes)
    assert m["macro_f1"] == pytest.approx(expected["macro_f1"]) and m["confusion"] == expected["confusion"]
    assert m["argmax"]["macro_f1"] == pytest.approx(
        classification_metrics([index[t] for t in truth], raw.argmax(1), model.classes)["macro_f1"])
    assert main(["predict", str(out), "--data", str(d / "test.csv")]) == 0
    cli = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert cli["label"].tolist() == model.predict(texts)
    # a calibration.json that does not fit the model is one clear error, not a wrong prediction
    atomic_write_json(out / "calibration.json", {**post, "bias": [0.0, 1.0]})
    with pytest.raises(UlmfitError, match="one bias per class"):
        ulmfit.load(out)
    atomic_write_json(out / "calibration.json", {**post, "temperature": 1.0, "bias": None, "calibration_bias": None})
    assert ulmfit.load(out).predict(texts) == [model.classes[i] for i in raw.argmax(1)]


def test_the_fast_macro_f1_of_the_search_equals_sklearns():
    from ulmfit.train.calibration import macro_f1_many

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    preds = rng.integers(0, 4, (20, 300))
    preds[0] = 0  # a constant prediction: three classes never predicted
    assert np.allclose(macro_f1_many(y, preds, 4), [macro_f1(y, p, 4) for p in preds])
    # weighted: a 0/1 mask is that subset's macro-F1, a count repeats the row (a bootstrap draw)
    w = np.stack([rng.integers(0, 2, 300), rng.multinomial(300, np.full(300, 1 / 300))])
    got = macro_f1_many(y, preds, 4, w)
    assert got.shape == (2, 20)
    for f in range(2):
        rows = np.repeat(np.arange(300), w[f])
        assert np.allclose(got[f], [macro_f1(y[rows], p[rows], 4) for p in preds])


@pytest.mark.parametrize("setting", ["auto", "none"])
def test_siatl_weights_its_task_loss_on_imbalanced_labels(setting, monkeypatch, tmp_path):
    import torch
    from conftest import make_rows

    from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
    from ulmfit.recipes import siatl as siatl_recipe
    from ulmfit.recipes.prepare import Labelled
    from ulmfit.recipes.siatl_config import SiatlConfig
    from ulmfit.recipes.ulmfit import LMResult
    from ulmfit.text.tokenize import Tokenizer
    from ulmfit.text.vocab import Vocab

    classes = ["neg", "neu", "pos"]
    df = make_rows(90, 0)
    df = pd.concat([df[df.label != "pos"], df[df.label == "pos"].iloc[:3]])  # 30/30/3
    train = Labelled(df.text.tolist(), np.array([classes.index(l) for l in df.label]), "train")
    valid = Labelled(train.texts[:20], train.labels[:20], "valid")
    tok = Tokenizer()
    vocab = Vocab.build(tok.tokenize_many(train.texts), min_freq=1)
    torch.manual_seed(0)
    cfg = AWDLSTMConfig.preset("tiny", vocab_size=len(vocab))
    seen = []
    real = siatl_recipe.F.cross_entropy

    def spy(logits, target, *a, weight=None, **kw):
        if logits.dim() == 2 and logits.shape[1] == len(classes):  # the task loss, not the LM's
            seen.append(weight)
        return real(logits, target, *a, weight=weight, **kw)

    monkeypatch.setattr(siatl_recipe.F, "cross_entropy", spy)
    scfg = SiatlConfig(task_hidden=8, bs=16, epochs=1, max_doc_tokens=16, min_steps_per_epoch=0, class_weights=setting)
    siatl_recipe.train_siatl(LMResult(LanguageModel(cfg), cfg, tok, vocab, []), train, valid, classes, tmp_path, scfg)
    assert seen
    if setting == "none":
        assert all(w is None for w in seen)
    else:
        w = seen[0]
        assert w is not None and w[2] > 5 * w[0] and all(torch.equal(x, w) for x in seen)
