"""Tweets test split: distilled / self-trained AWD-LSTM students against their teacher, by label budget.

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/distill.py --budgets 500 100 --seeds 0

Per seed, the forward and backward language models are fine-tuned ONCE on all training texts (the
demo's sizing, as benchmarks/transfer.py: `ulmfit finetune-lm`, LM 2 epochs over 600k tokens from
general-en / general-en-bwd). Per budget N:
- teacher: `ulmfit fit --direction both --max-labels N` from those two LMs (no further LM epochs):
  undistilled ULMFiT fwd+bwd; its forward half alone is undistilled ULMFiT fwd;
- student(s): `ulmfit distill --teacher <teacher> --max-labels N` (the other ~29k training tweets are
  the unlabelled text), starting from the same fine-tuned forward LM (`--pretrained LM --set
  lm.epochs=0`: the LM a student fine-tunes on the same text with the same settings), one per
  variant of the distillation settings (--variants).
Every model is scored once on the test split; bulk prediction speed of teacher and student is
measured side by side in this process over the test texts. Cells are cached as JSON under --work
(default runs/bench-distill); the table goes to stdout and --json (benchmarks/results/distill.json).
Threads: set OMP_NUM_THREADS (e.g. 1) in the environment; every subprocess inherits it.

Any teacher (a MiniLM folder, an ensemble) and its finished student, side by side on the test split:

    PYTHONPATH=src .venv/bin/python benchmarks/distill.py --compare TEACHER_DIR STUDENT_DIR --rounds 3

loads both, then times bulk prediction over the test texts alternately (--rounds times each, median
kept; the first call of each is a warm-up), scores both and their agreement, and writes --json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import CLF_SETTINGS, LM_SETTINGS, budget_flag, sets  # noqa: E402

from ulmfit.data.fetch import fetch_tweets  # noqa: E402
from ulmfit.data.readers import read_table  # noqa: E402
from ulmfit.recipes.predictor import load  # noqa: E402
from ulmfit.train.metrics import classification_metrics  # noqa: E402

CLI = [sys.executable, "-m", "ulmfit.cli"]
NO_LM_EPOCHS = ["lm.epochs=0", "lm.frozen_epochs=0"]
# variant name -> distill settings (`--set distill.FIELD=VALUE`)
VARIANTS = {"soft": [],  # the defaults: T 2, alpha 0.5, every unlabelled text
            "ratio10": ["distill.unlabeled_ratio=10"],  # 10 unlabelled rows per gold row, fixed subset
            "conf09": ["distill.threshold=0.9"],  # only unlabelled texts the teacher gives >= 0.9
            "rounds2": ["distill.rounds=2"]}


def run(cmd: list[str], log_path: Path) -> float:
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        rc = subprocess.call([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(map(str, cmd))}; see {log_path}")
    return time.perf_counter() - t0


def lm(paths, direction: str, seed: int, work: Path, lm_set: list[str]) -> Path:
    out = work / f"lm-{direction}-s{seed}"
    if not (out / "ulmfit.json").exists():
        pretrained = "general-en" if direction == "fwd" else "general-en-bwd"
        s = run(CLI + ["finetune-lm", "--train", paths["train"], "--out", out, "--overwrite", "--pretrained", pretrained,
                       "--direction", direction, *sets(LM_SETTINGS + lm_set + [f"seed={seed}"])], work / f"{out.name}.log")
        (out / "seconds.txt").write_text(f"{s:.1f}")
    return out


def teacher(paths, lms, budget: str, seed: int, work: Path) -> Path:
    out = work / f"teacher-{budget}-s{seed}"
    if not (out / "ulmfit.json").exists():
        s = run(CLI + ["fit", "--train", paths["train"], "--valid", paths["valid"], "--out", out, "--overwrite",
                       "--backbone", "awd_lstm", "--direction", "both", "--pretrained", lms[0], "--pretrained-bwd", lms[1], "--seed", seed,
                       *budget_flag(budget), *sets(NO_LM_EPOCHS + CLF_SETTINGS)], work / f"{out.name}.log")
        (out / "seconds.txt").write_text(f"{s:.1f}")
    return out


def student(paths, lms, teacher_dir: Path, variant: str, budget: str, seed: int, work: Path) -> Path:
    out = work / f"student-{variant}-{budget}-s{seed}"
    if not (out / "ulmfit.json").exists():
        s = run(CLI + ["distill", "--teacher", teacher_dir, "--train", paths["train"], "--valid", paths["valid"],
                       "--out", out, "--overwrite", "--pretrained", lms[0], "--seed", seed, *budget_flag(budget),
                       *sets(NO_LM_EPOCHS + CLF_SETTINGS + VARIANTS[variant])], work / f"{out.name}.log")
        (out / "seconds.txt").write_text(f"{s:.1f}")
    return out


def scores(model, test) -> tuple[dict, float, np.ndarray]:
    """Test metrics, bulk texts/s over the test texts, probabilities."""
    t0 = time.perf_counter()
    by = model.predict_proba_by_direction(test.texts)
    seconds = time.perf_counter() - t0
    probs = np.mean(list(by.values()), axis=0)
    y = [model.classes.index(l) for l in test.labels]
    out = {"all": classification_metrics(y, probs.argmax(1), model.classes)}
    if len(by) > 1:
        out.update({d: classification_metrics(y, p.argmax(1), model.classes) for d, p in by.items()})
    return {k: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]} for k, m in out.items()}, len(test.texts) / seconds, probs


def compare(teacher_dir: Path, student_dir: Path, rounds: int, out: Path) -> None:
    """Teacher vs student on the test split in one process: metrics, agreement, bulk texts/s (median)."""
    import torch

    test = read_table(fetch_tweets()["test"], "text", "label")
    models = {"teacher": load(teacher_dir), "student": load(student_dir)}
    for m in models.values():
        m.predict_proba(test.texts[:64])  # warm-up: first-call allocations, oneDNN primitive creation
    times: dict[str, list[float]] = {k: [] for k in models}
    probs = {}
    for _ in range(rounds):
        for name, m in models.items():  # alternate, so a change of machine load hits both alike
            t0 = time.perf_counter()
            probs[name] = m.predict_proba(test.texts)
            times[name].append(time.perf_counter() - t0)
    y = [models["teacher"].classes.index(l) for l in test.labels]
    res = {"teacher": str(teacher_dir), "student": str(student_dir), "threads": torch.get_num_threads(),
           "load_average": os.getloadavg(), "n_test": len(test.texts), "rounds": rounds}
    for name, m in models.items():
        ids = m.label_ids(probs[name])  # the folder's decision rule, as `ulmfit evaluate` applies it
        pred = [models["teacher"].classes.index(m.classes[i]) for i in ids]
        met = classification_metrics(y, np.array(pred), models["teacher"].classes)
        probs[name] = np.array(pred)
        res[name] = {"macro_f1": met["macro_f1"], "accuracy": met["accuracy"], "seconds": times[name],
                     "bulk_texts_per_s": len(test.texts) / float(np.median(times[name]))}
    res["agreement_test"] = float(np.mean(probs["teacher"] == probs["student"]))
    res["speedup"] = res["student"]["bulk_texts_per_s"] / res["teacher"]["bulk_texts_per_s"]
    print(f"test macro-F1 teacher {res['teacher']['macro_f1']:.4f}, student {res['student']['macro_f1']:.4f}; "
          f"agreement {res['agreement_test']:.3f}; bulk texts/s teacher {res['teacher']['bulk_texts_per_s']:.0f}, "
          f"student {res['student']['bulk_texts_per_s']:.0f} ({res['speedup']:.1f}x; {res['threads']} threads, "
          f"median of {rounds})", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", nargs=2, metavar=("TEACHER", "STUDENT"),
                   help="only score a finished teacher and student side by side (see above)")
    p.add_argument("--rounds", type=int, default=3, help="--compare: timed passes per model")
    p.add_argument("--budgets", nargs="+", default=["500", "100"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=["soft"], choices=sorted(VARIANTS))
    p.add_argument("--lm-set", nargs="*", default=[], help="LM settings over the demo's sizing (e.g. lm.epochs=1 "
                                                       "lm.max_tokens=300000 lm.frozen_epochs=0: a quick run)")
    p.add_argument("--work", default="runs/bench-distill")
    p.add_argument("--json", default="benchmarks/results/distill.json")
    a = p.parse_args()
    if a.compare:
        return compare(Path(a.compare[0]), Path(a.compare[1]), a.rounds, Path(a.json))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    paths = fetch_tweets()
    test = read_table(paths["test"], "text", "label")
    for seed in a.seeds:
        lms = [lm(paths, d, seed, work, a.lm_set) for d in ("fwd", "bwd")]
        for budget in a.budgets:
            t_dir = teacher(paths, lms, budget, seed, work)
            for variant in a.variants:
                cell = work / f"cell-{variant}-{budget}-s{seed}.json"
                if not cell.exists():
                    s_dir = student(paths, lms, t_dir, variant, budget, seed, work)
                    t_scores, t_speed, t_probs = scores(load(t_dir), test)
                    s_scores, s_speed, s_probs = scores(load(s_dir), test)
                    cell.write_text(json.dumps({
                        "teacher": t_scores, "student": s_scores["all"],
                        "agreement_test": float(np.mean(t_probs.argmax(1) == s_probs.argmax(1))),
                        "bulk_texts_per_s": {"teacher": t_speed, "student": s_speed},
                        "valid": json.loads((s_dir / "valid_metrics.json").read_text())["distill"],
                        "seconds": {"teacher": float((t_dir / "seconds.txt").read_text()),
                                    "student": float((s_dir / "seconds.txt").read_text())},
                        "threads": os.environ.get("OMP_NUM_THREADS"), "lm_settings": LM_SETTINGS + a.lm_set,
                        "clf_settings": CLF_SETTINGS, "variant_settings": VARIANTS[variant]}))
                r = json.loads(cell.read_text())
                print(f"seed {seed} {budget:>5s} {variant:8s} test macro-F1: teacher fwd+bwd "
                      f"{r['teacher']['all']['macro_f1']:.4f}, teacher fwd {r['teacher']['fwd']['macro_f1']:.4f}, "
                      f"student {r['student']['macro_f1']:.4f}; agreement {r['agreement_test']:.3f}; bulk texts/s "
                      f"teacher {r['bulk_texts_per_s']['teacher']:.0f} student {r['bulk_texts_per_s']['student']:.0f}",
                      flush=True)
    cells = {f.stem: json.loads(f.read_text()) for f in sorted(work.glob("cell-*.json"))}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cells": cells}, indent=2))


if __name__ == "__main__":
    main()
