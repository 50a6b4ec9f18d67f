"""Bias-corrected temperature scaling vs plain temperature scaling on kept model folders (issue 21).

For each model folder: its raw validation and test probabilities (`Classifier.predict_proba_raw`,
cached as .npz under --cache), then the real post-hoc step of this checkout (train/calibration.py
`fit_posthoc` + `apply`, the folder's own `imbalance` config and seed) and, for the labels, the
post-hoc step of the code before BCTS (`--before`, a git revision: its train/calibration.py, loaded
from `git show`). Prints per model test ECE / NLL raw, plain T and the chosen calibration, which one
was chosen, and whether the test labels (so macro-F1) are identical to those of the code before;
writes the figures as JSON (--out).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src .venv/bin/python benchmarks/bcts.py --out R.json \\
        --data ~/.cache/ulmfit/tweets-40-55-5/v1 FOLDER/model ... [--data DIR2 FOLDER2/model ...]

Not a speed benchmark: no timings.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"].strip() for r in rows]


def module_at(rev: str) -> types.ModuleType:
    """train/calibration.py as it was at git revision `rev` (the code before the change)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/ulmfit/train/calibration.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("calibration_before")
    exec(compile(src, f"{rev}:calibration.py", "exec"), mod.__dict__)
    return mod


def raw_probs(folder: Path, data: Path, cache: Path) -> dict:
    key = cache / (folder.parent.name + ".npz")
    if key.exists():
        z = np.load(key, allow_pickle=False)
        return {k: z[k] for k in z.files} | {"classes": [str(c) for c in z["classes"]]}
    from ulmfit.recipes.predictor import Classifier

    m = Classifier(folder)
    idx = {c: i for i, c in enumerate(m.classes)}
    out = {"classes": list(m.classes)}
    for split in ("valid", "test"):
        texts, labels = read(data / f"{split}.csv")
        out[f"p_{split}"] = m.predict_proba_raw(texts)
        out[f"y_{split}"] = np.array([idx[l] for l in labels], dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(key, **{k: v for k, v in out.items() if k != "classes"}, classes=np.array(out["classes"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default="/work/runs/s7/bcts-cache")
    ap.add_argument("--before", default="main", help="git revision of the code before BCTS (for the labels)")
    args, rest = ap.parse_known_args(argv)  # the rest, in order: --data DIR, then its model folders (repeatable)
    sys.path.insert(0, str(ROOT / "src"))
    from ulmfit.recipes.config import ImbalanceConfig
    from ulmfit.train import calibration as C

    before = module_at(args.before)
    # "--data DIR" switches the data set for the folders after it
    tokens, data, jobs = rest, None, []
    i = 0
    while i < len(tokens):
        if tokens[i] == "--data":
            data, i = Path(tokens[i + 1]).expanduser(), i + 2
            continue
        jobs.append((Path(tokens[i]), data))
        i += 1
    results = []
    print("| model | chosen | T / T_B | test ECE raw / T / chosen | test NLL raw / T / chosen | test macro-F1 before -> after | labels identical |")
    print("|---|---|---|---|---|---|---|")
    for folder, data in jobs:
        cfgd = json.loads((folder / "config.json").read_text())
        cfg, seed = ImbalanceConfig(**cfgd["imbalance"]), int(cfgd.get("seed", 0))
        r = raw_probs(folder, data, Path(args.cache))
        classes, k = r["classes"], len(r["classes"])
        pv, yv, pt, yt = r["p_valid"], r["y_valid"], r["p_test"], r["y_test"]
        new = C.fit_posthoc(pv, yv, classes, cfg, seed)
        old = before.fit_posthoc(pv, yv, classes, cfg, seed)
        cal_new, pred_new = C.apply(pt, new)
        cal_old, pred_old = before.apply(pt, old)
        # the labels of the code before, computed independently: argmax(log p_T + r)
        t = old["temperature"]
        r_old = np.zeros(k) if old["bias"] is None else np.asarray(old["bias"])
        indep = (np.log(np.clip(C.scale(pt, t).astype(np.float32), 1e-12, 1)) + r_old).argmax(1)
        row = {"model": folder.parent.name, "chosen": new["calibration"], "temperature_plain": t,
               "temperature": new["temperature"], "calibration_bias": new["calibration_bias"],
               "decision_rule": new["decision_rule"], "calibration_selection": new.get("calibration_selection"),
               "valid": {"ece_raw": C.ece(pv, yv), "ece_t": C.ece(C.scale(pv, t), yv), "ece_chosen": new["valid"]["ece_after"],
                         "nll_raw": C.nll(pv, yv), "nll_t": C.nll(C.scale(pv, t), yv), "nll_chosen": new["valid"]["nll_after"]},
               "test": {"n": int(len(yt)), "ece_raw": C.ece(pt, yt), "ece_t": C.ece(cal_old, yt), "ece_chosen": C.ece(cal_new, yt),
                        "nll_raw": C.nll(pt, yt), "nll_t": C.nll(cal_old, yt), "nll_chosen": C.nll(cal_new, yt),
                        "macro_f1_before": C.macro_f1(yt, pred_old, k), "macro_f1_after": C.macro_f1(yt, pred_new, k),
                        "labels_identical": bool(np.array_equal(pred_new, pred_old)),
                        "labels_differing": int((pred_new != pred_old).sum()),
                        "labels_identical_to_independent": bool(np.array_equal(pred_new, indep))}}
        results.append(row)
        s = row["test"]
        print(f"| {row['model']} | {row['chosen']} | {t:.3f} / {new['temperature']:.3f} | {s['ece_raw']:.4f} / {s['ece_t']:.4f} / "
              f"{s['ece_chosen']:.4f} | {s['nll_raw']:.4f} / {s['nll_t']:.4f} / {s['nll_chosen']:.4f} | "
              f"{s['macro_f1_before']:.4f} -> {s['macro_f1_after']:.4f} | {s['labels_identical']} "
              f"({s['labels_differing']} differ) |", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
