"""Tweets (or SpamAssassin) test split: ULMFiT from general-en vs from scratch, fwd+bwd, SiATL and TF-IDF,
by label budget.

    .venv/bin/python benchmarks/transfer.py --seeds 0 1 2 --budgets full 500 --methods fwd none tfidf
    .venv/bin/python benchmarks/transfer.py --seeds 0 --budgets 100 500 2000 full --methods fwd both siatl tfidf
    .venv/bin/python benchmarks/transfer.py --dataset spam --seeds 0 --budgets 100 500 2000 full --methods fwd tfidf

Methods (columns):
- `fwd`:  ULMFiT from `--pretrained` (default the shipped general-en);
- `none`: the same recipe with no pretrained LM (the LM learns from the tweets' text alone);
- `both`: `fwd` and a backward model from `--pretrained-bwd`, class probabilities averaged;
- `siatl`: SiATL (`ulmfit fit --recipe siatl`) from `--pretrained`;
- `tfidf`: TF-IDF (word 1-2 grams) + logistic regression, C chosen on validation.

ULMFiT's language model is fine-tuned ONCE per seed, start and direction on all training texts
(`ulmfit finetune-lm`); each label budget then trains a classifier from it (`ulmfit fit --pretrained
LM --set lm.epochs=0`). With N labels the other training texts are unlabelled, which is exactly the
text the LM was fine-tuned on, so sharing the LM across budgets changes nothing but the cost. The
backward classifier of `both` is trained with the same seed and settings as the forward one, which
is what `--direction both` does in one folder; here the two folders are averaged in-process.
Every method sees the same stratified sample of labels (ulmfit.data.subset.stratified_subset with
the seed) and the whole validation split; the test split is scored once per cell. Cells are cached
as JSON under --work (default runs/bench-transfer, runs/bench-transfer-spam for spam), so a rerun
resumes; the table (median over seeds) goes to stdout and --json (default
benchmarks/results/transfer.json, transfer_spam.json for spam).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ulmfit.data.fetch import fetch_tweets
from ulmfit.data.fetch_spam import fetch_spam
from ulmfit.data.readers import read_table
from ulmfit.data.subset import stratified_subset
from ulmfit.recipes.baselines import tfidf_logreg
from ulmfit.recipes.predictor import load
from ulmfit.train.metrics import classification_metrics

ULMFIT = str(Path(sys.executable).with_name("ulmfit"))
# The demo's sizing (src/ulmfit/demo.py): LM 2 epochs over at most 600k tokens, classifier 1+1+1+3.
# Rates: those FitConfig.resolved() picks for the small LMs (scratch and pretrained alike).
LM_SETTINGS = ["lm.preset=small", "lm.epochs=2", "lm.max_train_tokens=600000", "lm.lr=0.02"]
CLF_SETTINGS = ["clf.epochs=[1,1,1,3]", "clf.lrs=[0.02,0.01,0.01,0.005]"]
# data set: (fetcher, default --work, default --json)
DATASETS = {"tweets": (fetch_tweets, "runs/bench-transfer", "benchmarks/results/transfer.json"),
            "spam": (fetch_spam, "runs/bench-transfer-spam", "benchmarks/results/transfer_spam.json")}
METHODS = {"fwd": "ulmfit fwd (general-en)", "none": "ulmfit fwd (no pretrained LM)",
           "both": "ulmfit fwd+bwd (general-en)", "siatl": "siatl (general-en)", "tfidf": "tfidf + logreg"}


def run(cmd: list[str], log_path: Path) -> float:
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}; see {log_path}")
    return time.perf_counter() - t0


def sets(settings: list[str]) -> list[str]:
    return [x for s in settings for x in ("--set", s)]


def budget_flag(budget: str) -> list[str]:
    return [] if budget == "full" else ["--max-labels", budget]


def finetuned_lm(paths, start: str, pretrained: str, direction: str, seed: int, work: Path) -> tuple[Path, float]:
    """The LM fine-tuned on all training texts, once per (start, direction, seed); (folder, seconds)."""
    name = f"lm-{start}{'' if direction == 'fwd' else '-bwd'}-s{seed}"
    lm_dir = work / name
    if not (lm_dir / "ulmfit.json").exists():
        seconds = run([ULMFIT, "finetune-lm", "--train", str(paths["train"]), "--out", str(lm_dir), "--overwrite",
                       "--pretrained", pretrained, "--direction", direction, *sets(LM_SETTINGS + [f"seed={seed}"])],
                      work / f"{name}.log")
        (lm_dir / "seconds.txt").write_text(f"{seconds:.1f}")
    return lm_dir, float((lm_dir / "seconds.txt").read_text())


def classifier(paths, lm_dir: Path, direction: str, budget: str, seed: int, work: Path) -> tuple[Path, float]:
    out = work / f"clf-{lm_dir.name}-{budget}"
    if not (out / "ulmfit.json").exists():
        seconds = run([ULMFIT, "fit", "--train", str(paths["train"]), "--valid", str(paths["valid"]), "--out", str(out),
                       "--overwrite", "--backbone", "awd_lstm", "--pretrained", str(lm_dir), "--direction", direction, "--seed", str(seed),
                       *budget_flag(budget), *sets(["lm.epochs=0", "lm.frozen_epochs=0"] + CLF_SETTINGS)],
                      work / f"{out.name}.log")
        (out / "seconds.txt").write_text(f"{seconds:.1f}")
    return out, float((out / "seconds.txt").read_text())


def test_metrics(folders: list[Path], test) -> dict:
    """Test metrics of one classifier folder, or of several with their probabilities averaged."""
    models = [load(f) for f in folders]
    classes = models[0].classes
    probs = np.mean([m.predict_proba(test.texts) for m in models], axis=0)
    m = classification_metrics([classes.index(l) for l in test.labels], probs.argmax(1), classes)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def ulmfit_cell(a, paths, test, method: str, budget: str, seed: int, work: Path) -> dict:
    if method == "siatl":
        out = work / f"siatl-{budget}-s{seed}"
        seconds = run([ULMFIT, "fit", "--train", str(paths["train"]), "--valid", str(paths["valid"]), "--out", str(out),
                       "--overwrite", "--recipe", "siatl", "--backbone", "awd_lstm", "--pretrained", a.pretrained, "--seed", str(seed),
                       *budget_flag(budget), *sets(a.siatl_set)], work / f"{out.name}.log")
        return {**test_metrics([out], test), "seconds": seconds}
    start, pretrained = ("none", "none") if method == "none" else ("pre", a.pretrained)
    lm, lm_s = finetuned_lm(paths, start, pretrained, "fwd", seed, work)
    clf, clf_s = classifier(paths, lm, "fwd", budget, seed, work)
    folders, seconds = [clf], lm_s + clf_s
    if method == "both":
        lm_b, lm_b_s = finetuned_lm(paths, start, a.pretrained_bwd, "bwd", seed, work)
        clf_b, clf_b_s = classifier(paths, lm_b, "bwd", budget, seed, work)
        folders, seconds = [clf, clf_b], seconds + lm_b_s + clf_b_s
    return {**test_metrics(folders, test), "seconds": seconds}


def tfidf_cell(tables, budget: str, seed: int) -> dict:
    train, valid, test = tables
    texts, labels = train.texts, np.asarray(train.labels)
    classes = sorted(set(train.labels))
    if budget != "full":
        keep, _ = stratified_subset(np.array([classes.index(l) for l in labels]), total=int(budget), seed=seed)
        texts, labels = [texts[i] for i in keep], labels[keep]
    predict, info = tfidf_logreg(texts, list(labels), valid.texts, valid.labels, seed=seed)
    m = classification_metrics([classes.index(l) for l in test.labels], [classes.index(l) for l in predict(test.texts)],
                               classes)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "C": info["C"], "seconds": info["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrained", default="general-en", help="the forward pretrained LM")
    p.add_argument("--pretrained-bwd", default="general-en-bwd", help="the backward pretrained LM (method both)")
    p.add_argument("--methods", nargs="+", default=["fwd", "none", "tfidf"], choices=sorted(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", default=["full", "500"])
    p.add_argument("--siatl-set", nargs="*", default=[], help="SECTION.FIELD=VALUE overrides for siatl cells")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="tweets")
    p.add_argument("--work", default=None, help="cells and models (default runs/bench-transfer[-spam])")
    p.add_argument("--json", default=None, help="summary (default benchmarks/results/transfer[_spam].json)")
    a = p.parse_args()
    fetch, default_work, default_json = DATASETS[a.dataset]
    work = Path(a.work or default_work)
    work.mkdir(parents=True, exist_ok=True)
    paths = fetch()
    tables = [read_table(paths[s], "text", "label") for s in ("train", "valid", "test")]
    for seed in a.seeds:
        for budget in a.budgets:
            for method in a.methods:
                cache = work / f"cell-{method}-{budget}-s{seed}.json"
                if not cache.exists():
                    r = tfidf_cell(tables, budget, seed) if method == "tfidf" else \
                        ulmfit_cell(a, paths, tables[2], method, budget, seed, work)
                    cache.write_text(json.dumps(r))
                r = json.loads(cache.read_text())
                print(f"seed {seed} {budget:>5s} {METHODS[method]:30s} macro-F1 {r['macro_f1']:.4f} "
                      f"acc {r['accuracy']:.4f} ({r['seconds']:.0f}s)", flush=True)
    summarize(work, a.json or default_json, a.dataset)


def summarize(work: Path, json_path: str, dataset: str = "tweets") -> None:
    """The table of every cached cell: median over seeds per method and budget."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for f in sorted(work.glob("cell-*.json")):
        method, budget, seed = f.stem[len("cell-"):].rsplit("-", 2)
        cells.setdefault((method, budget), []).append({**json.loads(f.read_text()), "seed": int(seed[1:])})
    order = {m: i for i, m in enumerate(METHODS)}
    keyed = sorted(cells.items(), key=lambda kv: (kv[0][1] != "full", -int(kv[0][1]) if kv[0][1] != "full" else 0,
                                                  order.get(kv[0][0], 99)))
    print(f"\n{'labels':>6s} {'method':30s} {'seeds':>5s} {'macro-F1':>9s} {'accuracy':>9s}  per-seed macro-F1")
    rows = []
    for (method, budget), rs in keyed:
        rs.sort(key=lambda r: r["seed"])
        row = {"method": METHODS.get(method, method), "labels": budget, "seeds": [r["seed"] for r in rs],
               "macro_f1": statistics.median(r["macro_f1"] for r in rs),
               "accuracy": statistics.median(r["accuracy"] for r in rs), "cells": rs}
        rows.append(row)
        print(f"{budget:>6s} {row['method']:30s} {len(rs):5d} {row['macro_f1']:9.4f} {row['accuracy']:9.4f}  "
              f"{' '.join('%.4f' % r['macro_f1'] for r in rs)}")
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "dataset": dataset, "machine": os.uname().machine,
                                           "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
