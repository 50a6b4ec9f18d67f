"""The accuracy harness's own logic: seed parsing and its stratified label samples."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
accuracy = pytest.importorskip("accuracy")


def test_seeds_count_list_and_errors():
    assert accuracy.parse_seeds("3") == [0, 1, 2]
    assert accuracy.parse_seeds("0,2") == [0, 2]
    assert accuracy.parse_seeds("2,") == [2]
    for bad in ("0", "x", ","):
        with pytest.raises(SystemExit, match="--seeds"):
            accuracy.parse_seeds(bad)


@pytest.mark.parametrize("n,seed", [(100, 0), (500, 1), (7, 2)])
def test_sample_is_stratified_seeded_and_exact(n, seed):
    rng = np.random.default_rng(0)
    labels = rng.choice(["negative", "neutral", "positive"], size=3000, p=[0.4, 0.55, 0.05])
    ours = accuracy.stratified_sample(labels, n, seed)
    assert len(ours) == n and len(set(ours.tolist())) == n
    assert set(labels[ours]) == set(labels)  # every class at least once, the 5% one included
    for c in set(labels):  # each class within one row of its proportional share (or its minimum of one)
        share = n * (labels == c).mean()
        assert abs((labels[ours] == c).sum() - max(1, share)) < 1 + (n < 10)
    assert np.array_equal(ours, accuracy.stratified_sample(labels, n, seed))
    assert not np.array_equal(ours, accuracy.stratified_sample(labels, n, seed + 1))
    assert np.array_equal(accuracy.stratified_sample(labels[:5], 10, seed), np.arange(5))


def test_summary_keeps_cells_outside_this_runs_selection(tmp_path, monkeypatch):
    """Adding seed 2 of one cell must not drop seeds 0-1 (nor other methods) from the summary."""
    import json

    data = tmp_path / "toy"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.csv").write_text("text,label\nfine day,pos\nbad day,neg\n")
    cells = tmp_path / "res" / "accuracy"
    cells.mkdir(parents=True)
    for method, seed, f1 in [("tfidf", 0, 0.5), ("tfidf", 1, 0.7), ("tfidf", 2, 0.6), ("minilm-frozen", 0, 0.8)]:
        cell = {"status": "ok", "dataset": "toy", "method": method, "budget": "full", "n_labels": 2, "seed": seed,
                "macro_f1": f1, "accuracy": f1, "train_s": 1.0, "peak_rss_mb": 10.0}
        (cells / f"toy__{method}__full__s{seed}.json").write_text(json.dumps(cell))
    csv = ",".join(str(data / f"{s}.csv") for s in ("train", "valid", "test"))
    monkeypatch.setattr(sys, "argv", ["accuracy.py", "--csv", csv, "--methods", "tfidf", "--budgets", "full",
                                      "--seeds", "2,", "--summary-only", "--out", str(tmp_path / "res")])
    accuracy.main()
    summary = json.loads((tmp_path / "res" / "accuracy.json").read_text())
    rows = {r["method"]: r for r in summary["summary"]}
    assert rows["tfidf"]["seeds_ok"] == 3 and rows["tfidf"]["macro_f1"] == 0.6
    assert rows["minilm-frozen"]["macro_f1"] == 0.8
    assert summary["this_run"]["seeds"] == [2]
    assert (tmp_path / "res" / "accuracy_toy.png").exists()


def test_ensemble_cell_waits_for_its_members_kept_folders(tmp_path):
    """The ensemble method reads the kept model folders of its member cells; without them it is
    'unavailable' (retried on the next run) and names the cell to run first, and runs nothing."""
    import argparse

    a = argparse.Namespace(ensemble_of="ulmfit-fwd,ulmfit-minilm", cell_timeout=60, keep_models=True)
    work_tag, cell_root = tmp_path / "work" / "accuracy", tmp_path / "accuracy"
    (work_tag / "toy__ulmfit-fwd__500__s0" / "model").mkdir(parents=True)
    (work_tag / "toy__ulmfit-fwd__500__s0" / "model" / "ulmfit.json").write_text("{}")
    cell_root.mkdir()
    (cell_root / "toy__ulmfit-fwd__500__s0.json").write_text("{}")
    cdir = tmp_path / "cell"
    r = accuracy.run_ensemble(a, {"valid": tmp_path / "v.csv", "test": tmp_path / "t.csv"}, "toy", 500, 0,
                              work_tag, cell_root, cdir)
    assert r["status"] == "unavailable"
    assert "toy__ulmfit-minilm__500__s0" in r["reason"] and "--keep-models" in r["reason"]
    assert not cdir.exists()
    assert accuracy.METHODS[-1] == "ensemble"  # after every member method in a run's order


def test_distill_cell_waits_for_its_teacher_and_fine_tunes_the_student_lms_once_per_data_set(tmp_path, monkeypatch):
    """The distill method distils the kept ulmfit-minilm folder of the same cell; without it it is
    'unavailable' and runs nothing. With it, the two student LMs are fine-tuned on the whole training
    split once per data set (a second budget or seed reuses them) and the student starts from them."""
    import argparse

    a = argparse.Namespace(cell_timeout=60, keep_models=True, quick=False)
    work = tmp_path / "work"
    work_tag = work / "accuracy"
    splits = {"train": tmp_path / "train.csv", "valid": tmp_path / "v.csv", "test": tmp_path / "t.csv"}
    cdir = tmp_path / "cell"
    r = accuracy.run_distill(a, splits, "toy", 500, 0, tmp_path / "lab.csv", tmp_path / "rest.csv", work, work_tag, cdir)
    assert r["status"] == "unavailable" and "toy__ulmfit-minilm__500__s0" in r["reason"] and not cdir.exists()

    calls = []

    def fake_step(a, cmd, log_path):
        calls.append(cmd)
        if cmd[1] == "finetune-lm":
            out = Path(cmd[cmd.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "ulmfit.json").write_text("{}")
        return {"wall_s": 1.0, "peak_rss_mb": 10.0}, None

    metrics = {"macro_f1": 0.7, "accuracy": 0.8, "per_class": {"a": {"f1": 0.7}}, "n": 3}
    monkeypatch.setattr(accuracy, "run_step", fake_step)
    monkeypatch.setattr(accuracy, "evaluate_folder", lambda a, out, splits, cdir: ({"wall_s": 1.0, "peak_rss_mb": 5.0}, metrics, None))
    monkeypatch.setattr(accuracy, "rare_class_f1", lambda f1, test: {})
    for seed in (0, 1):
        (work_tag / f"toy__ulmfit-minilm__500__s{seed}" / "model").mkdir(parents=True)
        (work_tag / f"toy__ulmfit-minilm__500__s{seed}" / "model" / "ulmfit.json").write_text("{}")
        r = accuracy.run_distill(a, splits, "toy", 500, seed, tmp_path / "lab.csv", tmp_path / "rest.csv", work, work_tag,
                                 tmp_path / f"cell{seed}")
        assert r["status"] == "ok" and r["macro_f1"] == 0.7
    lm_calls = [c for c in calls if c[1] == "finetune-lm"]
    assert len(lm_calls) == 2 and {c[c.index("--direction") + 1] for c in lm_calls} == {"fwd", "bwd"}
    assert all(c[c.index("--train") + 1] == str(splits["train"]) for c in lm_calls)
    student = [c for c in calls if c[1] == "distill"]
    assert len(student) == 2
    cmd = student[1]
    assert cmd[cmd.index("--teacher") + 1] == str(work_tag / "toy__ulmfit-minilm__500__s1" / "model")
    assert cmd[cmd.index("--pretrained") + 1] == str(work / "toy" / "student-lm-fwd")
    assert cmd[cmd.index("--pretrained-bwd") + 1] == str(work / "toy" / "student-lm-bwd")
    assert cmd[cmd.index("--direction") + 1] == "both" and cmd[cmd.index("--seed") + 1] == "1"
    assert accuracy.METHODS.index("distill") < accuracy.METHODS.index("ensemble")
    assert accuracy.ENSEMBLE_OF.split(",") == ["ulmfit-minilm", "distill"]


def test_a_terminated_harness_takes_its_measured_child_with_it(tmp_path):
    """SIGTERM to a harness waiting in run_measured stops the child too: a cell left running would go
    on writing into a folder the next run reuses."""
    import os
    import signal
    import subprocess
    import time

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    harness = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(bench)!r}); import common; "
                                f"common.run_measured([sys.executable, '-c', {child!r}])"])
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    harness.send_signal(signal.SIGTERM)
    assert harness.wait(timeout=10) == 128 + signal.SIGTERM
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child_pid, signal.SIGKILL)
        raise AssertionError("the measured child outlived its harness")


def test_write_json_is_atomic_under_a_unique_name(tmp_path):
    import common

    target = tmp_path / "r" / "out.json"
    common.write_json(target, {"a": 1})
    common.write_json(target, {"a": 2})
    assert common.read_json(target) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp file left behind


def fit_commands(tmp_path, monkeypatch, methods, seed=0, student=True, rest="rest.csv") -> list[list[str]]:
    """The `ulmfit fit` command line each ULMFiT method's cell would run (nothing runs)."""
    import argparse

    cmds = []
    monkeypatch.setattr(accuracy, "train_and_score", lambda a, cmd, *more: cmds.append(cmd) or {})
    a = argparse.Namespace(quick=False, ulmfit_labels="harness", ulmfit_set=None, pretrained=None)
    caps = {"max_labels": True, "direction_both": True, "direction": True, "siatl": True, "backbone": True,
            "student": student}
    splits = {"train": tmp_path / "train.csv", "valid": tmp_path / "v.csv", "test": tmp_path / "t.csv"}
    for method in methods:
        accuracy.run_ulmfit(method, None, a, caps, splits, tmp_path / "lab.csv", rest and tmp_path / rest, 500, seed,
                            tmp_path / method, print)
    return cmds


def test_the_minilm_cell_is_the_model_alone_and_the_default_cell_whatever_fit_does(tmp_path, monkeypatch):
    """ulmfit-minilm is the distill cells' teacher: the MiniLM model alone (`--student off`), never the
    few-label ensemble; ulmfit-default passes no model choice at all, so it is what `fit` does by itself."""
    minilm, default = fit_commands(tmp_path, monkeypatch, ("ulmfit-minilm", "ulmfit-default"))
    assert minilm[minilm.index("--student") + 1] == "off" and minilm[minilm.index("--backbone") + 1] == "minilm"
    assert "--student" not in default and "--backbone" not in default and "--unlabeled" in default
    old, = fit_commands(tmp_path, monkeypatch, ("ulmfit-minilm",), student=False, rest=None)
    assert "--student" not in old  # a CLI from before the setting: the flag it does not know is not passed


def test_the_second_minilm_cell_differs_only_in_its_training_seed_and_fixed_weights_reach_the_ensemble(tmp_path, monkeypatch):
    """ulmfit-minilm-2 is ulmfit-minilm on the same label sample with seed 100+SEED (a deep ensemble's second
    member); --ensemble-weights is passed to `ulmfit ensemble --weights`, and left out when not given."""
    import argparse

    first, second = fit_commands(tmp_path, monkeypatch, ("ulmfit-minilm", "ulmfit-minilm-2"), seed=3)
    assert first[first.index("--seed") + 1] == "3" and second[second.index("--seed") + 1] == "103"
    drop = lambda cmd: [x for i, x in enumerate(cmd) if x != "--seed" and (i == 0 or cmd[i - 1] != "--seed")]
    assert drop(first)[4:] == drop(second)[4:]  # the same data, backbone and settings; only --out and --seed differ
    assert accuracy.METHODS.index("ulmfit-minilm-2") < accuracy.METHODS.index("ensemble")

    steps = []
    monkeypatch.setattr(accuracy, "run_step", lambda a, cmd, log: steps.append(cmd) or ({}, {"status": "failed"}))
    work_tag, cell_root = tmp_path / "work" / "accuracy", tmp_path / "accuracy"
    cell_root.mkdir()
    for m in ("ulmfit-minilm", "ulmfit-minilm-2"):
        (work_tag / f"toy__{m}__500__s0" / "model").mkdir(parents=True)
        (work_tag / f"toy__{m}__500__s0" / "model" / "ulmfit.json").write_text("{}")
        (cell_root / f"toy__{m}__500__s0.json").write_text("{}")
    for weights in ("equal", None):
        a = argparse.Namespace(ensemble_of="ulmfit-minilm,ulmfit-minilm-2", ensemble_weights=weights, cell_timeout=60,
                               keep_models=True)
        accuracy.run_ensemble(a, {"valid": tmp_path / "v.csv"}, "toy", 500, 0, work_tag, cell_root, tmp_path / "cell")
    assert steps[0][-2:] == ["--weights", "equal"] and "--weights" not in steps[1]
