"""Does the pretrained LM help? The same ULMFiT recipe from general-en and from scratch, vs TF-IDF.

    .venv/bin/python benchmarks/transfer.py --pretrained general-en --seeds 0 1 2 --budgets full 500

For each seed and each starting point (`--pretrained` and `none`), the language model is
fine-tuned ONCE on all training texts (`ulmfit finetune-lm`), then one classifier is trained per
label budget from that LM (`ulmfit fit --pretrained LM --set lm.epochs=0`): with N labels the
other training texts are unlabelled, which is exactly the text the LM was fine-tuned on, so sharing
the LM across budgets changes nothing but the cost. Both arms use the same rates (the from-scratch
ones, which also suit the small pretrained model; see docs/BENCHMARKS.md) and the demo's sizing.
TF-IDF + logistic regression (C chosen on validation) sees the same labelled sample.
Each cell is evaluated once on the test split and cached as JSON under --work; the table (median
over seeds) is printed and written to --json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ulmfit.data.fetch import fetch_tweets
from ulmfit.data.readers import read_table
from ulmfit.data.subset import stratified_subset
from ulmfit.recipes.baselines import tfidf_logreg
from ulmfit.train.metrics import classification_metrics

ULMFIT = str(Path(sys.executable).with_name("ulmfit"))
LM_SETTINGS = ["lm.preset=small", "lm.epochs=2", "lm.max_tokens=600000", "lm.lr=0.02"]
CLF_SETTINGS = ["clf.epochs=[1,1,1,3]", "clf.lrs=[0.02,0.01,0.01,0.005]"]


def run(cmd: list[str], log_path: Path) -> float:
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}; see {log_path}")
    return time.perf_counter() - t0


def sets(settings: list[str]) -> list[str]:
    return [x for s in settings for x in ("--set", s)]


def ulmfit_cell(paths, arm: str, pretrained: str, budget: str, seed: int, work: Path) -> dict:
    lm_dir = work / f"lm-{arm}-s{seed}"
    lm_seconds = 0.0
    if not (lm_dir / "ulmfit.json").exists():
        lm_seconds = run([ULMFIT, "finetune-lm", "--train", str(paths["train"]), "--out", str(lm_dir), "--overwrite",
                          "--pretrained", pretrained, *sets(LM_SETTINGS + [f"seed={seed}"])], work / f"lm-{arm}-s{seed}.log")
        (lm_dir / "seconds.txt").write_text(f"{lm_seconds:.1f}")
    lm_seconds = float((lm_dir / "seconds.txt").read_text())
    out = work / f"clf-{arm}-{budget}-s{seed}"
    budget_flag = [] if budget == "full" else ["--max-labels", budget]
    clf_seconds = run([ULMFIT, "fit", "--train", str(paths["train"]), "--valid", str(paths["valid"]), "--out", str(out),
                       "--overwrite", "--pretrained", str(lm_dir), "--seed", str(seed), *budget_flag,
                       *sets(["lm.epochs=0", "lm.frozen_epochs=0"] + CLF_SETTINGS)], work / f"clf-{arm}-{budget}-s{seed}.log")
    res = subprocess.run([ULMFIT, "evaluate", str(out), "--data", str(paths["test"]), "--json"],
                         capture_output=True, text=True, check=True)
    m = json.loads(res.stdout)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "lm_seconds": lm_seconds, "clf_seconds": clf_seconds}


def tfidf_cell(tables, budget: str, seed: int) -> dict:
    train, valid, test = tables
    texts, labels = train.texts, np.asarray(train.labels)
    if budget != "full":
        classes = sorted(set(labels))
        keep, _ = stratified_subset(np.array([classes.index(l) for l in labels]), total=int(budget), seed=seed)
        texts, labels = [texts[i] for i in keep], labels[keep]
    predict, info = tfidf_logreg(texts, list(labels), valid.texts, valid.labels, seed=seed)
    classes = sorted(set(train.labels))
    idx = {c: i for i, c in enumerate(classes)}
    m = classification_metrics([idx[l] for l in test.labels], [idx[l] for l in predict(test.texts)], classes)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "C": info["C"], "seconds": info["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrained", default="general-en", help="the pretrained LM to compare with scratch")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", default=["full", "500"])
    p.add_argument("--arms", nargs="+", default=["pretrained", "none", "tfidf"],
                   help="which columns to run now (cells already cached are always reported)")
    p.add_argument("--work", default="runs/bench-transfer")
    p.add_argument("--json", default="benchmarks/results/transfer.json")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    paths = fetch_tweets()
    tables = [read_table(paths[s], "text", "label") for s in ("train", "valid", "test")]
    arms = {f"ulmfit ({Path(a.pretrained).name})": a.pretrained, "ulmfit (none)": "none", "tfidf + logreg": None}
    chosen = {f"ulmfit ({Path(a.pretrained).name})": "pretrained", "ulmfit (none)": "none", "tfidf + logreg": "tfidf"}
    cells: dict[tuple[str, str], list[dict]] = {}
    for seed in a.seeds:
        for budget in a.budgets:
            for name, pretrained in arms.items():
                cache = work / f"cell-{name.replace(' ', '_').replace('(', '').replace(')', '')}-{budget}-s{seed}.json"
                if cache.exists():
                    r = json.loads(cache.read_text())
                elif chosen[name] not in a.arms:
                    continue
                else:
                    arm = "none" if pretrained == "none" else "pre"
                    r = tfidf_cell(tables, budget, seed) if pretrained is None else \
                        ulmfit_cell(paths, arm, pretrained, budget, seed, work)
                    cache.write_text(json.dumps(r))
                cells.setdefault((name, budget), []).append(r)
                print(f"seed {seed} {budget:>5s} {name:28s} macro-F1 {r['macro_f1']:.4f} acc {r['accuracy']:.4f}", flush=True)
    print(f"\n{'method':28s} {'labels':>6s} {'seeds':>5s} {'macro-F1 (median)':>18s} {'accuracy (median)':>18s}  per-seed macro-F1")
    summary = []
    for (name, budget), rs in cells.items():
        f1s = [r["macro_f1"] for r in rs]
        row = {"method": name, "labels": budget, "seeds": len(rs), "macro_f1": statistics.median(f1s),
               "accuracy": statistics.median(r["accuracy"] for r in rs), "per_seed": rs}
        summary.append(row)
        print(f"{name:28s} {budget:>6s} {len(rs):5d} {row['macro_f1']:18.4f} {row['accuracy']:18.4f}  "
              f"{' '.join(f'{x:.4f}' for x in f1s)}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "args": vars(a), "rows": summary}, indent=2))


if __name__ == "__main__":
    main()
