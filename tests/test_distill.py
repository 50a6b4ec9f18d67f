"""Distillation and self-training: the loss, the teacher-probability cache (resume after a kill,
stale detection), the student's training set (stratified gold part, threshold), the student folder."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import ulmfit
from ulmfit.cli import main
from ulmfit.data.augment import augment
from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.data.subset import stratified_subset
from ulmfit.errors import UlmfitError
from ulmfit.recipes import distill as distill_module
from ulmfit.recipes.distill import select_unlabeled
from ulmfit.recipes.predictor import BUILD_PRECISION
from ulmfit.recipes.teacher import folder_hash, teacher_probabilities
from ulmfit.text.token_docs import TokenDocs
from ulmfit.train.distill import NO_LABEL, DistillTask, distillation_loss, teacher_at_temperature
from ulmfit.train.tasks import ClassLoss

from conftest import make_rows, tiny_fit_config

SRC = str(Path(ulmfit.__file__).resolve().parent.parent)


# ----------------------------------------------------------------------------- the loss

def _batch(seed=0, b=12, c=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g) * 2
    teacher = torch.softmax(torch.randn(b, c, generator=g) * 3, -1)
    labels = torch.randint(0, c, (b,), generator=g)
    return logits, labels, teacher


def test_weight_zero_is_plain_cross_entropy_on_the_gold_rows():
    logits, labels, teacher = _batch()
    w = torch.tensor([0.5, 1.0, 2.0])
    assert torch.equal(distillation_loss(logits, labels, teacher, 3.0, 0.0), F.cross_entropy(logits, labels))
    assert torch.equal(distillation_loss(logits, labels, teacher, 3.0, 0.0, ClassLoss(weight=w)),
                       F.cross_entropy(logits, labels, weight=w))
    partial = labels.clone()
    partial[::2] = NO_LABEL  # unlabelled rows: no gold term, and at weight 0 nothing at all
    gold = partial != NO_LABEL
    assert torch.allclose(distillation_loss(logits, partial, teacher, 3.0, 0.0), F.cross_entropy(logits[gold], labels[gold]))


def test_weight_mixes_the_two_terms_linearly_and_unlabelled_rows_only_feed_the_soft_term():
    logits, labels, teacher = _batch(1)
    hard = distillation_loss(logits, labels, teacher, 2.0, 0.0)
    soft = distillation_loss(logits, labels, teacher, 2.0, 1.0)
    for alpha in (0.25, 0.5, 0.9):
        assert torch.allclose(distillation_loss(logits, labels, teacher, 2.0, alpha), (1 - alpha) * hard + alpha * soft)
    # the soft term ignores the labels; with no gold row at all only the soft term is left, at any weight
    assert torch.allclose(distillation_loss(logits, torch.full_like(labels, NO_LABEL), teacher, 2.0, 1.0), soft)
    assert torch.allclose(distillation_loss(logits, torch.full_like(labels, NO_LABEL), teacher, 2.0, 0.3), 0.3 * soft)
    # a student that reproduces the teacher has no soft loss, at every temperature
    for t in (1.0, 2.0, 5.0):
        assert distillation_loss(torch.log(teacher), labels, teacher, t, 1.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_term_gradient_at_temperature(temperature):
    """d/ds of T^2 KL(p_T || softmax(s/T)) averaged over B rows = T (softmax(s/T) - p_T) / B (Hinton et al. §2)."""
    logits, labels, teacher = _batch(2)
    s = logits.clone().requires_grad_(True)
    distillation_loss(s, torch.full_like(labels, NO_LABEL), teacher, temperature, 1.0).backward()
    p_t = teacher_at_temperature(teacher, temperature)
    expected = temperature * (torch.softmax(logits / temperature, -1) - p_t) / len(logits)
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_temperature_flattens_the_teacher():
    p = torch.tensor([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    assert torch.allclose(teacher_at_temperature(p, 1.0), p)
    entropy = lambda q: -(q * q.log()).sum(-1)
    e1, e2, e5 = (entropy(teacher_at_temperature(p, t)) for t in (1.0, 2.0, 5.0))
    assert bool((e1 < e2).all() and (e2 < e5).all())
    assert torch.equal(teacher_at_temperature(p, 2.0).argmax(-1), p.argmax(-1))  # the ranking is kept
    with pytest.raises(ValueError):
        distillation_loss(*_batch(), temperature=0.0, alpha=0.5)
    with pytest.raises(ValueError):
        distillation_loss(*_batch(), temperature=1.0, alpha=1.5)


def test_distill_task_looks_soft_targets_up_by_the_loaders_row_index():
    """Document i is the single token i; a model that outputs log(soft[i]) has zero soft loss only if the
    task matches every shuffled, length-sorted batch row to its own soft target."""
    n, c = 40, 3
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    lengths = rng.integers(1, 6, size=n)
    ids = np.concatenate([np.full(k, i + 10, dtype=np.int32) for i, k in enumerate(lengths)])
    docs = TokenDocs(ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    labels = np.where(np.arange(n) % 2 == 0, NO_LABEL, soft.argmax(1)).astype(np.int64)

    class Oracle(torch.nn.Module):
        def forward(self, ids, lengths):
            return torch.log(torch.from_numpy(soft[ids[:, 0].numpy() - 10]))

    task = DistillTask(["a", "b", "c"], soft, temperature=2.0, alpha=1.0)
    loader = ClassificationLoader(docs, labels, bs=8, shuffle=True, seed=3)
    losses = [task.loss(Oracle(), batch).item() for batch in loader]
    assert max(losses) == pytest.approx(0.0, abs=1e-6)
    shifted = DistillTask(["a", "b", "c"], np.roll(soft, 1, axis=0), temperature=2.0, alpha=1.0)
    assert max(shifted.loss(Oracle(), batch).item() for batch in loader) > 1e-3


# ----------------------------------------------------------------------------- the teacher cache

class FakeTeacher:
    """A deterministic 'model': probabilities from the text's characters; counts what it is asked."""

    def __init__(self, classes=("neg", "neu", "pos"), fail_after=None):
        self.classes, self.fail_after, self.calls, self.sizes = list(classes), fail_after, 0, []

    def predict_proba(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.sizes.append(len(texts))
        raw = np.array([[sum(map(ord, t)) % 7 + 1, len(t) % 5 + 1, 3.0] for t in texts], dtype=np.float64)
        return raw / raw.sum(1, keepdims=True)


def _teacher_dir(path: Path, weights: bytes = b"w1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(weights)
    (path / "report.md").write_text("reports do not change predictions")
    return path


TEXTS = [f"text number {i} " + "x" * (i % 13) for i in range(100)]
CLASSES = ["neg", "neu", "pos"]


def test_cache_after_an_interruption_computes_only_the_missing_chunks(tmp_path):
    teacher = _teacher_dir(tmp_path / "teacher")
    whole = np.array(teacher_probabilities(teacher, TEXTS, tmp_path / "whole", CLASSES, chunk_size=16,
                                           load=lambda d: FakeTeacher()))
    cut = FakeTeacher(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        teacher_probabilities(teacher, TEXTS, tmp_path / "cache", CLASSES, chunk_size=16, load=lambda d: cut)
    again, logs = FakeTeacher(), []
    resumed = teacher_probabilities(teacher, TEXTS, tmp_path / "cache", CLASSES, chunk_size=16,
                                    load=lambda d: again, log=logs.append)
    assert again.calls == 7 - 3 and max(again.sizes) <= 16  # 100 texts = 7 chunks; one chunk of texts at a time
    assert np.array_equal(np.asarray(resumed), whole)
    assert any("resuming at text 48" in m for m in logs)
    unused = FakeTeacher()
    teacher_probabilities(teacher, TEXTS, tmp_path / "cache", CLASSES, chunk_size=16, load=lambda d: unused)
    assert unused.calls == 0  # complete: the teacher is not even loaded again


@pytest.mark.slow
def test_cache_resumes_after_the_process_is_killed(tmp_path):
    """SIGKILL in the middle of a chunk (no exception handling runs): the finished chunks are kept."""
    teacher = _teacher_dir(tmp_path / "teacher")
    script = tmp_path / "pass.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        sys.path.insert(0, {SRC!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_distill import FakeTeacher, TEXTS, CLASSES
        from ulmfit.recipes.teacher import teacher_probabilities

        class Dies(FakeTeacher):
            def predict_proba(self, texts):
                if self.calls == 4:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().predict_proba(texts)

        teacher_probabilities({str(teacher)!r}, TEXTS, {str(tmp_path / "cache")!r}, CLASSES, chunk_size=16,
                              load=lambda d: Dies())
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert json.loads((tmp_path / "cache" / "teacher_probs.json").read_text())["done_chunks"] == 4
    again = FakeTeacher()
    resumed = teacher_probabilities(teacher, TEXTS, tmp_path / "cache", CLASSES, chunk_size=16, load=lambda d: again)
    whole = teacher_probabilities(teacher, TEXTS, tmp_path / "whole", CLASSES, chunk_size=16, load=lambda d: FakeTeacher())
    assert again.calls == 3 and np.array_equal(np.asarray(resumed), np.asarray(whole))


def test_stale_cache_is_detected_and_computed_again(tmp_path):
    teacher = _teacher_dir(tmp_path / "teacher")
    cache = tmp_path / "cache"
    teacher_probabilities(teacher, TEXTS, cache, CLASSES, chunk_size=16, load=lambda d: FakeTeacher())

    def run(texts=TEXTS, classes=CLASSES):
        t, logs = FakeTeacher(), []
        out = teacher_probabilities(teacher, texts, cache, classes, chunk_size=16, load=lambda d: t, log=logs.append)
        return t.calls, " ".join(logs), np.asarray(out)

    (teacher / "report.md").write_text("a new report")  # not part of the model: still valid
    assert run()[0] == 0
    (teacher / "model.safetensors").write_bytes(b"w2")  # retrained teacher
    calls, log, _ = run()
    assert calls == 7 and "the teacher's files changed" in log
    moved = tmp_path / "moved"
    teacher.rename(moved)  # the same files elsewhere: the same teacher
    t = FakeTeacher()
    teacher_probabilities(moved, TEXTS, cache, CLASSES, chunk_size=16, load=lambda d: t)
    assert t.calls == 0
    moved.rename(teacher)
    changed = TEXTS[:50] + ["another text"] + TEXTS[51:]
    calls, log, probs = run(changed)
    assert calls == 7 and "other texts" in log
    assert np.array_equal(probs[50], FakeTeacher().predict_proba(["another text"])[0].astype(np.float32))
    calls, log, probs = run(changed, ["pos", "neg", "neu"])  # another column order: recomputed and re-mapped
    assert calls == 7 and "other classes" in log
    expected = FakeTeacher().predict_proba(changed[:3])[:, [2, 0, 1]].astype(np.float32)
    assert np.array_equal(probs[:3], expected)


def test_teacher_with_other_classes_is_refused(tmp_path):
    teacher = _teacher_dir(tmp_path / "teacher")
    with pytest.raises(UlmfitError, match="predicts classes"):
        teacher_probabilities(teacher, TEXTS, tmp_path / "c", ["neg", "pos"], load=lambda d: FakeTeacher())


def test_folder_hash_ignores_logs_and_resume_state(tmp_path):
    d = _teacher_dir(tmp_path / "t")
    h = folder_hash(d)
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "x.pt").write_bytes(b"state")
    (d / "history.jsonl").write_text("{}\n")
    assert folder_hash(d) == h
    (d / "vocab.json").write_text("[]")
    assert folder_hash(d) != h


# ----------------------------------------------------------------------------- the student's training set

def test_threshold_keeps_only_confident_unlabelled_rows_and_ratio_subsamples_them():
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33], [0.1, 0.1, 0.8]])
    assert select_unlabeled(probs, 0.0, None, 10, 0).tolist() == [0, 1, 2, 3, 4]
    assert select_unlabeled(probs, 0.7, None, 10, 0).tolist() == [0, 2, 4]
    assert select_unlabeled(probs, 0.95, None, 10, 0).tolist() == []
    sub = select_unlabeled(probs, 0.35, 1.0, 2, seed=5)  # 2 of the 4 confident rows, seeded
    assert len(sub) == 2 and set(sub) <= {0, 1, 2, 4} and np.array_equal(sub, select_unlabeled(probs, 0.35, 1.0, 2, 5))


def _distill_config(**distill):
    cfg = tiny_fit_config()
    cfg.lm.epochs = 1
    cfg.clf.epochs, cfg.clf.lrs = (1, 3), (3e-2, 2e-2)
    for k, v in distill.items():
        setattr(cfg.distill, k, v)
    return cfg


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny fwd+bwd ULMFiT teacher and its data; imbalanced training rows (60 neg / 30 neu / 30 pos)."""
    d = tmp_path_factory.mktemp("distill")
    rows = make_rows(180, 0)
    rows = pd.concat([rows[rows.label == "neg"], rows[rows.label != "neg"].iloc[:60]]).sample(frac=1, random_state=0)
    rows.to_csv(d / "train.csv", index=False)
    make_rows(45, 1).to_csv(d / "valid.csv", index=False)
    make_rows(60, 7)[["text"]].to_csv(d / "unl.csv", index=False)
    cfg = _distill_config()
    cfg.direction = "both"
    ulmfit.fit(d / "train.csv", d / "valid.csv", out=d / "teacher", config=cfg)
    return d


@pytest.mark.slow
def test_gold_part_is_the_stratified_sample_and_the_rest_only_has_soft_targets(teacher, tmp_path, monkeypatch):
    seen = {}
    real = distill_module.train_classifier

    def spy(lm, train, valid, classes, out, cfg, **kw):
        seen.update(train=train, soft=kw["soft"], classes=classes)
        return real(lm, train, valid, classes, out, cfg, **kw)

    monkeypatch.setattr(distill_module, "train_classifier", spy)
    cfg = _distill_config()
    cfg.data.max_labels = 24
    ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=tmp_path / "s",
                   unlabeled=[teacher / "unl.csv"], config=cfg)
    table = pd.read_csv(teacher / "train.csv")
    labels = table.label.map({c: i for i, c in enumerate(seen["classes"])}).to_numpy()
    keep, rest = stratified_subset(labels, total=24, seed=cfg.seed)
    assert seen["train"].texts == table.text.iloc[keep].tolist()
    assert np.bincount(seen["train"].labels).tolist() == [12, 6, 6]  # 2:1:1 as the 120 rows
    # every other training row and every --unlabeled row trains on the teacher's soft targets only
    assert len(seen["soft"].extra_tokens) == len(rest) + 60 and len(seen["soft"].probs) == 24 + len(rest) + 60
    unl = json.loads((tmp_path / "s" / "valid_metrics.json").read_text())["distill"][0]
    assert (unl["n_gold"], unl["n_unlabeled"], unl["n_unlabeled_used"]) == (24, len(rest) + 60, len(rest) + 60)


@pytest.mark.slow
def test_augmented_copies_join_as_unlabelled_rows_with_the_teachers_probabilities(teacher, tmp_path, monkeypatch):
    seen = {}
    real_train, real_augment = distill_module.train_classifier, distill_module.augment

    def spy_train(lm, train, valid, classes, out, cfg, **kw):
        seen.update(train=train.texts, soft=kw["soft"], classes=classes)
        return real_train(lm, train, valid, classes, out, cfg, **kw)

    def spy_augment(sources, copies, seed):
        seen.update(sources=list(sources))
        return real_augment(sources, copies, seed)

    monkeypatch.setattr(distill_module, "train_classifier", spy_train)
    monkeypatch.setattr(distill_module, "augment", spy_augment)
    cfg = _distill_config(augment=2, threshold=0.4)
    cfg.data.max_labels = 24
    out = tmp_path / "s"
    ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=out,
                   unlabeled=[teacher / "unl.csv"], config=cfg)
    info = json.loads((out / "valid_metrics.json").read_text())["distill"][0]
    n_unl, soft = info["n_unlabeled_used"], seen["soft"]
    # the copies are made from the gold rows and the unlabelled rows the threshold kept
    assert seen["sources"][:24] == seen["train"] and len(seen["sources"]) == 24 + n_unl
    texts, _ = real_augment(seen["sources"], 2, cfg.seed)
    model = ulmfit.load(teacher / "teacher", precision=BUILD_PRECISION)  # as the teacher pass loads it
    probs = model.predict_proba(texts)[:, [list(model.classes).index(c) for c in seen["classes"]]]
    confident = np.flatnonzero(probs.max(1) >= 0.4)  # the threshold applies to the copies too
    assert 0 < len(confident) < len(texts) and info["n_augmented"] == len(confident) and info["augment"] == 2
    assert len(soft.extra_tokens) == n_unl + len(confident) and len(soft.probs) == 24 + n_unl + len(confident)
    np.testing.assert_allclose(soft.probs[24 + n_unl:], probs[confident], atol=1e-5)
    assert soft.extra_tokens[n_unl:] == model_tokens(out, [texts[i] for i in confident])
    assert (out / "teacher" / "augment" / "teacher_probs.npy").exists()
    assert f"{len(confident):,} copies" in (out / "report.md").read_text()


def model_tokens(folder: Path, texts: list[str]) -> list[list[str]]:
    """`texts` as the student folder's tokenizer writes them."""
    from ulmfit.recipes import model_dir

    return model_dir.load_text_pipeline(folder)[0].tokenize_many(texts)


@pytest.mark.slow
def test_student_folder_reloads_predicts_and_reports_agreement(teacher, tmp_path, capsys):
    out = tmp_path / "student"
    code = main([str(a) for a in ["distill", "--teacher", teacher / "teacher", "--train", teacher / "train.csv",
                                  "--valid", teacher / "valid.csv", "--unlabeled", teacher / "unl.csv", "--out", out,
                                  "--pretrained", "none", "--direction", "fwd", "--temperature", "3", "--alpha", "0.7",
                                  "--max-labels", "60",
                                  "--set", "lm.preset=tiny", "--set", "lm.epochs=1", "--set", "lm.bs=8",
                                  "--set", "lm.bptt=12", "--set", "lm.min_freq=1", "--set", "lm.lr=0.03",
                                  "--set", "clf.bs=16", "--set", "clf.lin_sizes=[16]", "--set", "clf.epochs=[1,3]",
                                  "--set", "clf.lrs=[0.03,0.02]", "--set", "clf.min_steps_per_epoch=0",
                                  "--set", "clf.patience=null"]])
    assert code == 0
    marker = json.loads((out / "ulmfit.json").read_text())
    assert marker["kind"] == "classifier" and marker["directions"] == ["fwd"] and marker["recipe"] == "distill"
    assert json.loads((out / "config.json").read_text())["distill"]["teacher"] == str((teacher / "teacher").resolve())
    assert not (out / "checkpoints").exists() and (out / "teacher" / "teacher_probs.npy").exists()
    model = ulmfit.load(out)
    texts = pd.read_csv(teacher / "valid.csv").text.tolist()
    probs = model.predict_proba(texts)
    assert probs.shape == (45, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    metrics = json.loads((out / "valid_metrics.json").read_text())
    d = metrics["distill"][0]
    assert (d["temperature"], d["alpha"], d["n_gold"], d["n_unlabeled"]) == (3.0, 0.7, 60, 60 + 60)
    teacher_model = ulmfit.load(teacher / "teacher")
    # agreement: the student's own probabilities (before its calibration, which may move its argmax: BCTS)
    # vs the teacher's probabilities the round used (its cache: gold, unlabelled, then validation rows)
    cached = np.load(out / "teacher" / "teacher_probs.npy")
    assert cached.shape == (60 + 120 + 45, 3)
    agree = float(np.mean(model.predict_proba_raw(texts).argmax(1) == cached[-45:].argmax(1)))
    assert d["agreement"]["valid"] == pytest.approx(agree, abs=1e-9)
    assert d["teacher_metrics"]["macro_f1"] == pytest.approx(
        teacher_model.evaluate(texts, pd.read_csv(teacher / "valid.csv").label.tolist())["macro_f1"])
    assert metrics["macro_f1"] == pytest.approx(model.evaluate(texts, pd.read_csv(teacher / "valid.csv").label.tolist())["macro_f1"])
    report = (out / "report.md").read_text()
    assert "## Distillation" in report and "agreement (unlabelled)" in report
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(teacher / "valid.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 45
    assert main(["predict", str(out), "--data", str(teacher / "valid.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 45
    # served and exported like any forward classifier
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from ulmfit.serving.app import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(model=str(out), threads=1))) as c:
        for _ in range(200):
            if c.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        body = c.post("/predict", json={"texts": texts[:5]}).json()
        served = np.array([[p["probabilities"][k] for k in body["classes"]] for p in body["predictions"]])
        assert np.abs(served - probs[:5]).max() <= 1e-5
    # parity with the exact (fp32) torch path: a small calibration T (BCTS) magnifies bf16's differences
    exact = ulmfit.load(out, precision="fp32").predict_proba(texts)
    assert np.abs(ulmfit.load(out, runtime="onnx").predict_proba(texts) - exact).max() <= 1e-4
    # run again over the same folder: the valid teacher cache is reused, the teacher is not loaded
    cfg = ulmfit.recipes.config.FitConfig.load(out / "config.json")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr("ulmfit.recipes.teacher._load_model", lambda d: pytest.fail("teacher loaded again"))
    try:
        ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=out,
                       unlabeled=[teacher / "unl.csv"], config=cfg, overwrite=True)
    finally:
        monkeypatch.undo()


@pytest.mark.slow
def test_self_training_rounds_chain_teachers(teacher, tmp_path):
    logs = []
    model = ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=tmp_path / "st",
                           config=_distill_config(rounds=2, threshold=0.5, alpha=1.0), log=logs.append)
    rounds = json.loads((tmp_path / "st" / "valid_metrics.json").read_text())["distill"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[1]["teacher"].endswith("checkpoints/round-1")  # round 1's student teaches round 2
    assert all(r["n_unlabeled"] == 0 for r in rounds)  # no unlabelled text here: gold rows only
    assert rounds[1]["teacher_metrics"]["macro_f1"] == pytest.approx(rounds[0]["student"]["macro_f1"])
    assert not (tmp_path / "st" / "checkpoints").exists()
    assert model.predict(["I love this"])[0] in model.classes


@pytest.mark.slow
def test_distill_refuses_what_it_cannot_do(teacher, tmp_path, capsys):
    base = ["distill", "--train", str(teacher / "train.csv"), "--out", str(tmp_path / "x")]
    assert main(base + ["--teacher", str(tmp_path / "nothing")]) == 2
    assert "distill.teacher=" in capsys.readouterr().err
    assert main(base) == 2
    assert "name the teacher model folder" in capsys.readouterr().err
    assert main(base + ["--teacher", str(teacher / "teacher"), "--direction", "fwd", "--pretrained-bwd", "none"]) == 2
    assert "--pretrained-bwd is for --direction both" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    pd.DataFrame({"text": ["a b", "c d", "e f", "g h"], "label": ["x", "y", "x", "y"]}).to_csv(other, index=False)
    assert main(["distill", "--train", str(other), "--valid", str(other), "--out", str(tmp_path / "y"),
                 "--teacher", str(teacher / "teacher"), "--pretrained", "none", "--set", "lm.preset=tiny",
                 "--set", "lm.epochs=0", "--set", "lm.frozen_epochs=0", "--set", "lm.min_freq=1"]) == 2
    assert "predicts classes" in capsys.readouterr().err
    assert main(base + ["--teacher", str(teacher / "teacher"), "--alpha", "2"]) == 2
    assert "distill.alpha" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, rule", [("--augment", "-2", "must be >= 0"), ("--temperature", "0", "must be > 0"),
                                               ("--threshold", "1", "must be >= 0 and < 1")])
def test_a_distill_flag_out_of_range_is_named_as_typed(flag, value, rule, tmp_path, capsys):
    """distill's own flags become distill.* settings; a bad one is reported as the flag the user typed
    (not as a --set they never wrote), before any file is read; the same value through --set says --set."""
    base = ["distill", "--teacher", str(tmp_path / "t"), "--train", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]
    field = f"distill.{flag[2:]}"
    assert main(base + [flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} ") and f"{field}=" in err and rule in err
    assert "--set" not in err and "none.csv" not in err
    assert main(base + ["--set", f"{field}={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --set '{field}={value}': {field}=") and rule in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_interrupted_distillation_resumes_to_the_uninterrupted_student(teacher, tmp_path, monkeypatch):
    """Stopped in round 2's classifier after one epoch; --resume skips round 1 and the finished epoch
    and ends with the same weights as a run that was never stopped."""
    from safetensors.numpy import load_file

    cfg = _distill_config(rounds=2)
    args = dict(unlabeled=[teacher / "unl.csv"])
    ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=tmp_path / "whole",
                   config=cfg, **args)
    calls = {"n": 0}
    real = DistillTask.evaluate

    def stop_in_round_two(self, model, loader):
        calls["n"] += 1
        if calls["n"] == 4 + 2:  # round 1: 4 epochs; round 2: stop at its second epoch's evaluation
            raise KeyboardInterrupt
        return real(self, model, loader)

    monkeypatch.setattr(DistillTask, "evaluate", stop_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=tmp_path / "cut",
                       config=cfg, **args)
    assert (tmp_path / "cut" / "checkpoints" / "round-1-done.json").exists()
    monkeypatch.setattr(DistillTask, "evaluate", real)
    logs = []
    ulmfit.distill(out=tmp_path / "cut", resume=True, log=logs.append, **args)
    assert any("round 1: already trained" in m for m in logs)
    a = load_file(tmp_path / "whole" / "classifier.safetensors")
    b = load_file(tmp_path / "cut" / "classifier.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- students per direction


def _spy_teacher(monkeypatch):
    """Count what the teacher is asked: every teacher pass (its cache folder, the texts it predicted)."""
    from ulmfit.recipes import teacher as teacher_module

    passes = []
    real = distill_module.teacher_probabilities

    def spy(teacher_dir, texts, cache, classes, **kw):
        asked, loads = [], []

        def load(folder):
            loads.append(folder)
            model = teacher_module._load_model(folder)
            predict = model.predict_proba
            model.predict_proba = lambda t, **k: (asked.extend(t), predict(t, **k))[1]
            return model

        out = real(teacher_dir, texts, cache, classes, load=load, **kw)
        passes.append({"cache": Path(cache), "n_texts": len(texts), "asked": asked, "loads": len(loads)})
        return out

    monkeypatch.setattr(distill_module, "teacher_probabilities", spy)
    return passes


def _both_config(parallel="off", **distill):
    cfg = _student_config(**distill)
    cfg.direction, cfg.parallel_directions = "both", parallel
    return cfg


def _student_config(**distill):
    """Students that learn something from the gold rows (the tiny teacher's soft targets are near-uniform),
    so their agreement with the teacher is not trivially 1."""
    cfg = _distill_config(**distill)
    cfg.clf.epochs, cfg.clf.lrs = (1, 10), (3e-2, 2e-2)
    return cfg


def _distill_both(teacher, out, cfg, **kw):
    return ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=out,
                          unlabeled=[teacher / "unl.csv"], config=cfg, **kw)


@pytest.fixture(scope="module")
def both_student(teacher, tmp_path_factory):
    """A fwd+bwd student trained one direction after the other, without interruption; the teacher passes."""
    mp = pytest.MonkeyPatch()
    passes = _spy_teacher(mp)
    try:
        out = tmp_path_factory.mktemp("both") / "student"
        _distill_both(teacher, out, _both_config())
    finally:
        mp.undo()
    return out, passes


def _assert_same_students(a: Path, b: Path):
    from safetensors.numpy import load_file

    for sub in ("", "bwd"):
        for name in ("lm.safetensors", "classifier.safetensors"):
            x, y = load_file(a / sub / name), load_file(b / sub / name)
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), f"{sub or 'fwd'}/{name}"
    ma, mb = (json.loads((f / "valid_metrics.json").read_text()) for f in (a, b))
    assert ma["by_direction"] == mb["by_direction"] and ma["macro_f1"] == mb["macro_f1"]
    for ra, rb in zip(ma["distill"], mb["distill"]):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


@pytest.mark.slow
def test_both_student_predicts_the_mean_of_its_two_students_and_the_teacher_runs_once(teacher, both_student,
                                                                                       capsys):
    from ulmfit.recipes.predictor import Member
    from ulmfit.train.calibration import apply

    out, passes = both_student
    # the teacher: one pass over every gold, unlabelled and validation text, in the run's folder only
    assert len(passes) == 1 and passes[0]["cache"] == out / "teacher" and passes[0]["loads"] == 1
    assert sorted(passes[0]["asked"]) == sorted(pd.read_csv(teacher / "train.csv").text.tolist()
                                                + pd.read_csv(teacher / "unl.csv").text.tolist()
                                                + pd.read_csv(teacher / "valid.csv").text.tolist())
    assert not (out / "bwd" / "teacher").exists() and not (out / "checkpoints").exists()
    top, bwd = (json.loads((f / "ulmfit.json").read_text()) for f in (out, out / "bwd"))
    assert (top["recipe"], top["direction"], top["directions"]) == ("distill", "fwd", ["fwd", "bwd"])
    assert (bwd["recipe"], bwd["direction"], bwd["directions"]) == ("distill", "bwd", ["bwd"])
    # reloaded: the mean of the two students' probabilities (calibrated as a fit `both` folder)
    texts = pd.read_csv(teacher / "valid.csv").text.tolist()
    model = ulmfit.load(out, precision="fp32")
    tokens = model.tokenizer.tokenize_many(texts)
    fwd = Member.load(out, "fwd", "distill", precision="fp32").predict_proba(tokens, 3)
    back = ulmfit.load(out / "bwd", precision="fp32").predict_proba_raw(texts)  # a model folder of its own
    assert not np.allclose(fwd, back)
    assert np.allclose(model.predict_proba_raw(texts), (fwd + back) / 2, atol=1e-6)
    assert np.allclose(model.predict_proba(texts), apply((fwd + back) / 2, model.calibration)[0], atol=1e-6)
    # the report: each student and the averaged one against the teacher; agreement of the average recomputed
    metrics = json.loads((out / "valid_metrics.json").read_text())
    info = metrics["distill"][0]
    assert set(info["by_direction"]) == {"fwd", "bwd"} and info["directions"] == ["fwd", "bwd"]
    for d in ("fwd", "bwd"):
        assert info["by_direction"][d]["student"] == metrics["by_direction"][d]
    cache = np.load(out / "teacher" / "teacher_probs.npy")
    t_valid = cache[-len(texts):]
    assert info["agreement"]["valid"] == pytest.approx(np.mean(((fwd + back) / 2).argmax(1) == t_valid.argmax(1)))
    assert info["by_direction"]["bwd"]["agreement"]["valid"] == pytest.approx(np.mean(back.argmax(1) == t_valid.argmax(1)))
    report = (out / "report.md").read_text()
    assert "| fwd+bwd averaged |" in report and "| fwd |" in report and "| bwd |" in report
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(teacher / "valid.csv"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["by_direction"]) == {"fwd", "bwd"}


@pytest.mark.slow
def test_resumed_both_run_keeps_the_finished_forward_student_and_equals_the_uninterrupted_one(
        teacher, both_student, tmp_path, monkeypatch):
    from ulmfit.train import loop

    out = tmp_path / "cut"
    real = loop.append_jsonl

    def stop_in_the_backward_classifier(path, record):
        real(path, record)
        if "bwd" in Path(path).parts and record.get("phase") == "classifier" and record["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "append_jsonl", stop_in_the_backward_classifier)
    with pytest.raises(KeyboardInterrupt):
        _distill_both(teacher, out, _both_config())
    monkeypatch.setattr(loop, "append_jsonl", real)
    assert (out / "checkpoints" / "fwd-done.json").exists() and not (out / "checkpoints" / "bwd-done.json").exists()
    forward = {f: (out / f).read_bytes() for f in ("history.jsonl", "lm.safetensors", "classifier.safetensors")}
    passes, logs = _spy_teacher(monkeypatch), []
    ulmfit.distill(out=out, resume=True, unlabeled=[teacher / "unl.csv"], log=logs.append)
    assert any("forward model: already trained" in m for m in logs)
    assert not any(m.startswith("forward language model") or m.startswith("forward classifier") for m in logs)
    assert {f: (out / f).read_bytes() for f in forward} == forward  # nothing of the forward student ran again
    assert len(passes) == 1 and passes[0]["loads"] == 0  # the teacher cache reused: the teacher not even loaded
    _assert_same_students(both_student[0], out)


@pytest.mark.slow
def test_cli_direction_both_in_two_processes_equals_one_after_the_other(teacher, both_student, tmp_path, capsys):
    from ulmfit.fileio import atomic_write_json

    atomic_write_json(tmp_path / "cfg.json", _student_config().to_dict())
    out = tmp_path / "s"
    assert main([str(a) for a in ["distill", "--teacher", teacher / "teacher", "--train", teacher / "train.csv",
                                  "--valid", teacher / "valid.csv", "--unlabeled", teacher / "unl.csv", "--out", out,
                                  "--config", tmp_path / "cfg.json", "--direction", "both", "--pretrained-bwd", "none",
                                  "--set", "parallel_directions=on"]]) == 0
    err = capsys.readouterr().err
    assert "side by side, two processes" in err
    assert "[bwd] backward language model" in err and "[fwd] forward classifier" in err
    assert "[fwd] teacher" not in err and "[bwd] teacher" not in err  # the teacher ran once, in the parent
    saved = json.loads((out / "config.json").read_text())
    assert (saved["direction"], saved["pretrained_bwd"]) == ("both", "none")
    _assert_same_students(both_student[0], out)


@pytest.mark.slow
def test_backward_student_reads_reversed_text(teacher, tmp_path):
    from ulmfit.recipes.predictor import Member

    out = tmp_path / "bwd"
    model = ulmfit.distill(teacher / "teacher", teacher / "train.csv", teacher / "valid.csv", out=out,
                           config=_student_config(), direction="bwd")
    marker = json.loads((out / "ulmfit.json").read_text())
    assert (marker["direction"], marker["directions"], marker["recipe"]) == ("bwd", ["bwd"], "distill")
    assert not (out / "bwd").exists() and json.loads((out / "config.json").read_text())["direction"] == "bwd"
    assert [m.direction for m in ulmfit.load(out).members] == ["bwd"]
    texts = pd.read_csv(teacher / "valid.csv").text.tolist()
    tokens = model.tokenizer.tokenize_many(texts)
    loaded = Member.load(out, "bwd", "distill", precision="fp32")
    reversed_ = loaded.predict_proba(tokens, 3)
    assert np.allclose(ulmfit.load(out, precision="fp32").predict_proba_raw(texts), reversed_, atol=1e-6)
    forward = Member("fwd", loaded.tokenizer, loaded.vocab, loaded.model).predict_proba(tokens, 3)
    assert not np.allclose(forward, reversed_)  # the same weights read forward predict otherwise
    assert "| 1 |" in (out / "report.md").read_text() and "| bwd |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_both_self_training_the_averaged_student_teaches_the_next_round(teacher, tmp_path, monkeypatch):
    from ulmfit.train import loop

    lm_epochs = []
    real = loop.append_jsonl
    monkeypatch.setattr(loop, "append_jsonl", lambda path, record: (
        lm_epochs.append(Path(path).parent.name) if record.get("phase") == "lm" else None, real(path, record))[1])
    out = tmp_path / "st"
    model = _distill_both(teacher, out, _both_config(rounds=2))
    rounds = json.loads((out / "valid_metrics.json").read_text())["distill"]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["teacher"].endswith("checkpoints/round-1")
    # round 1's teacher for round 2 is the AVERAGED fwd+bwd student of round 1
    for k in ("accuracy", "macro_f1"):
        assert rounds[1]["teacher_metrics"][k] == pytest.approx(rounds[0]["student"][k])
    assert set(rounds[0]["by_direction"]) == set(rounds[1]["by_direction"]) == {"fwd", "bwd"}
    # each direction's language model is fine-tuned once (round 1) and shared by round 2
    assert sorted(lm_epochs) == sorted(["st"] * _distill_config().lm.epochs + ["bwd"] * _distill_config().lm.epochs)
    assert not (out / "checkpoints").exists() and model.directions == ["fwd", "bwd"]


# ----------------------------------------------------------------------------- the default direction (both)

def _captured(monkeypatch):
    """Stand in for recipes/fit.py `fit`: record the config each call would train with, train nothing."""
    seen = []

    def fake_fit(train, valid, *, config=None, **kw):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr("ulmfit.recipes.fit.fit", fake_fit)
    return seen


@pytest.mark.parametrize("extra, expected", [
    ([], "both"),  # the distill recipe's default_direction
    (["--direction", "fwd"], "fwd"),
    (["--direction", "bwd"], "bwd"),
    (["--set", "direction=fwd"], "fwd"),
    (["--set", "fit.direction=bwd"], "bwd"),
    (["--config", "{with_fwd}"], "fwd"),  # a config that has a direction: its direction
    (["--config", "{without}"], "both"),  # a config that has none: the recipe's default
])
def test_distill_defaults_to_both_unless_the_user_chose_a_direction(tmp_path, monkeypatch, extra, expected):
    seen = _captured(monkeypatch)
    (tmp_path / "fwd.json").write_text(json.dumps({**tiny_fit_config().to_dict(), "direction": "fwd"}))
    (tmp_path / "none.json").write_text(json.dumps({"seed": 3}))
    extra = [e.format(with_fwd=tmp_path / "fwd.json", without=tmp_path / "none.json") for e in extra]
    with pytest.raises(SystemExit):
        main(["distill", "--teacher", str(tmp_path), "--train", "t.csv", "--out", str(tmp_path / "s")] + extra)
    assert seen[0].direction == expected and seen[0].recipe == "distill"


def test_fit_keeps_fwd_and_fit_recipe_distill_gets_the_distill_default(tmp_path, monkeypatch):
    seen = _captured(monkeypatch)
    for args in (["fit"], ["fit", "--recipe", "siatl"], ["fit", "--recipe", "distill"]):
        with pytest.raises(SystemExit):
            main(args + ["--train", "t.csv", "--out", str(tmp_path / "m")])
    assert [c.direction for c in seen] == ["fwd", "fwd", "both"]
    from ulmfit.recipes.config import FitConfig

    assert FitConfig().direction == "fwd"  # the config field's own default is fit's


def test_python_distill_defaults_to_both_and_a_given_config_or_direction_stands(tmp_path, monkeypatch):
    seen = _captured(monkeypatch)
    cfg = tiny_fit_config()
    for kw in ({}, {"direction": "fwd"}, {"config": cfg}, {"config": cfg, "direction": "bwd"}):
        with pytest.raises(SystemExit):
            ulmfit.distill(tmp_path, "t.csv", out=tmp_path / "s", **kw)
    assert [c.direction for c in seen] == ["both", "fwd", "fwd", "bwd"]
    assert seen[0].pretrained_bwd == "auto"


def test_default_both_with_a_forward_lm_folder_gives_the_backward_student_general_en_bwd(tmp_path, monkeypatch):
    """--pretrained FOLDER (a forward LM) and no --pretrained-bwd: the backward student starts from the
    shipped general-en-bwd (as `fit --direction both`); with --pretrained none both start from scratch."""
    from ulmfit.recipes import model_dir

    if "general-en-bwd" not in model_dir.shipped_models():
        pytest.skip("general-en-bwd is not installed")
    seen = _captured(monkeypatch)
    fwd_lm = model_dir.SHIPPED / "general-en"
    for pretrained in (str(fwd_lm), "none"):
        with pytest.raises(SystemExit):
            main(["distill", "--teacher", str(tmp_path), "--train", "t.csv", "--out", str(tmp_path / "s"),
                  "--pretrained", pretrained])
    both, scratch = seen
    resolve = model_dir.resolve_pretrained
    assert (resolve(both.pretrained_for("fwd"), "fwd"), resolve(both.pretrained_for("bwd"), "bwd")) == (
        fwd_lm, model_dir.SHIPPED / "general-en-bwd")
    assert resolve(scratch.pretrained_for("fwd"), "fwd") is None and resolve(scratch.pretrained_for("bwd"), "bwd") is None


@pytest.mark.slow
def test_default_cli_run_trains_fwd_and_bwd_students_and_records_both(teacher, tmp_path, monkeypatch):
    seen = []
    real = distill_module.pretrained_lm
    monkeypatch.setattr(distill_module, "pretrained_lm", lambda run, d: seen.append(d) or real(run, d))
    out, cfg = tmp_path / "student", tmp_path / "cfg.json"
    cfg.write_text(json.dumps({k: v for k, v in _distill_config().to_dict().items() if k != "direction"}))  # tiny, no direction
    code = main([str(a) for a in ["distill", "--teacher", teacher / "teacher", "--train", teacher / "train.csv",
                                  "--valid", teacher / "valid.csv", "--out", out, "--pretrained", "none",
                                  "--config", cfg, "--set", "parallel_directions=off"]])
    assert code == 0 and sorted(seen) == ["bwd", "fwd"]
    assert json.loads((out / "config.json").read_text())["direction"] == "both"
    marker = json.loads((out / "ulmfit.json").read_text())
    assert (marker["recipe"], marker["directions"]) == ("distill", ["fwd", "bwd"]) and (out / "bwd" / "classifier.safetensors").exists()
    assert [m.direction for m in ulmfit.load(out).members] == ["fwd", "bwd"]


def test_the_report_shows_the_model_with_its_own_rule_beside_the_students_argmax():
    """On imbalanced classes a student's argmax is far below what it predicts with its decision rule; the
    teacher's figure is its decisions. The Distillation table says which is which and shows the model both ways."""
    from ulmfit.recipes.distill import report_section

    agree = {"valid": 0.8, "unlabeled": 0.82}
    info = {"round": 1, "teacher": "T", "directions": ["fwd"], "teacher_metrics": {"accuracy": 0.73, "macro_f1": 0.6170},
            "student": {"accuracy": 0.747, "macro_f1": 0.5341}, "agreement": agree, "n_gold": 500,
            "n_unlabeled_used": 20489, "n_unlabeled": 20489, "unlabeled_ratio": None, "temperature": 2.0, "alpha": 0.5,
            "threshold": 0.0}
    text = report_section({"macro_f1": 0.6142, "accuracy": 0.7276, "distill": [info]})
    assert "| 0.5341 (0.6142 with its rule) |" in text and "student macro-F1 (argmax)" in text
    # a model without a rule (its decisions are its argmax): one figure
    assert "with its rule" not in report_section({"macro_f1": 0.5341, "distill": [info]}).split("\n| 1 |")[1]
