"""The ensemble's weight rules side by side on finished model folders: which weights each rule chooses on
the validation split, and what they score on labelled files no member trained on.

    PYTHONPATH=src .venv/bin/python benchmarks/ensemble_rules.py --tag tweets-2000-s0 \
        --members A=DIR M=DIR --valid VALID.csv --score test=TEST.csv [rest=REST.csv] \
        [--combos AM,AMT] --json benchmarks/results/ensemble_rules.jsonl

Rules (recipes/ensemble.py `choose_weights`): "anchor best member" (the default from the tenth to the
twenty-eighth session: the best single member unless the best grid point beats it out of fold beyond the bootstrap's noise),
"anchor equal" (the plain average unless the better of that blend and the best member beats it beyond
noise), "anchor best member or equal" (the better of those two out of fold unless the blend beats it beyond
noise), "anchor top average" (the default since the twenty-ninth session: the plain average of the members
validation cannot tell from the best, unless the better of the blend and the best member beats it beyond
noise) and "equal" (`--weights equal`, no choice). Each member's probabilities are computed once per file
and cached (--cache, keyed by folder and file): the validation split in `BUILD_PRECISION` as
`ulmfit ensemble` computes it, the scored files in the precision `ulmfit evaluate` uses. The labels a weight
vector gives are those the built ensemble predicts (`point_predictions`: the members' decision rules weighted
like their probabilities; a single member's own decision at a corner; the blend's calibration changes no
label). Prints a table and appends one JSON line per (combination, rule, file) to --json (with the F1 of the
file's rarest class); with --rows, each one's right/wrong per row to an .npz (keys "COMBO|RULE|FILE") for
paired tests (benchmarks/results/s28-spam/paired_rules.py).

`--decisions` scores each rule's weights with other decisions of the blend beside the ensemble's own ("members":
the members' decision rules weighted like their probabilities): "argmax", the blend's plain argmax (no member's
rule), and "gated", the members' rule only where it beats that argmax on the validation split in at least
`CONFIDENCE` of paired bootstrap resamples (recipes/ensemble.py `paired_bootstrap`), else the argmax. Their rows
name the rule "RULE (DECISION)" and carry the gate's share (thirty-third session, docs/BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]
from accuracy import read_split  # noqa: E402
from ulmfit.recipes import predictor  # noqa: E402
from ulmfit.recipes.ensemble import (CONFIDENCE, choose_weights, member_probs, paired_bootstrap,  # noqa: E402
                                     point_predictions)
from ulmfit.train.metrics import classification_metrics  # noqa: E402

RULES = ("anchor best member", "anchor equal", "anchor best member or equal", "anchor top average", "equal")
DECISIONS = ("members", "argmax", "gated")  # how a blend decides (module docstring); "members" is the ensemble's


def probs_of(folder: Path, path: Path, precision: str, cache: Path, classes: list[str]) -> np.ndarray:
    """A member's probabilities over the texts of `path`, columns in `classes` order (cached)."""
    key = hashlib.sha1(f"{folder.resolve()}|{path.resolve()}|{precision}".encode()).hexdigest()[:16]
    f = cache / f"{key}.npy"
    if f.exists():
        return np.load(f)
    texts = read_split(path)["text"].astype(str).tolist()
    t0 = time.time()
    p = member_probs(predictor.load(folder, precision=precision), classes, texts)
    print(f"# {folder}: {len(texts)} texts of {path.name} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, p)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True, help="names this set of folders in the output (data set, budget, seed)")
    ap.add_argument("--members", nargs="+", required=True, help="NAME=FOLDER (one letter per member)")
    ap.add_argument("--valid", type=Path, required=True)
    ap.add_argument("--score", nargs="+", required=True, help="NAME=CSV: labelled files to score on")
    ap.add_argument("--combos", default=None, help="comma list of member-letter combinations (default: all members)")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "ensemble-rules-cache")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rows", type=Path, default=None,
                    help="an .npz to write each (combination, rule, file)'s right/wrong per row to (paired tests)")
    ap.add_argument("--decisions", default="members",
                    help=f"comma list of {', '.join(DECISIONS)}: how each rule's blend decides (module docstring)")
    a = ap.parse_args()
    decisions = a.decisions.split(",")
    if not decisions or set(decisions) - set(DECISIONS):
        ap.error(f"--decisions {a.decisions}: a comma list of {', '.join(DECISIONS)}")

    members = dict(m.split("=", 1) for m in a.members)
    folders = {k: Path(v) for k, v in members.items()}
    loaded = {k: predictor.load(f) for k, f in folders.items()}
    classes = loaded[next(iter(loaded))].classes
    biases = {k: m.bias_in(classes) for k, m in loaded.items()}
    files = {"valid": a.valid, **{n: Path(p) for n, p in (s.split("=", 1) for s in a.score)}}
    y = {n: np.array([classes.index(str(l).strip()) for l in read_split(p)["label"]]) for n, p in files.items()}
    probs = {(k, n): probs_of(folders[k], p, predictor.BUILD_PRECISION if n == "valid" else predictor.PREDICT_PRECISION,
                              a.cache, classes)
             for k in folders for n, p in files.items()}
    combos = a.combos.split(",") if a.combos else ["".join(folders)]
    rows, right = [], {}
    for combo in combos:
        ks = list(combo)
        b = np.stack([biases[k] for k in ks])
        choices = {}
        for rule in RULES:
            if rule == "equal":
                choices[rule] = (np.full(len(ks), 1.0 / len(ks)), {"rule": "fixed"})
            else:
                choices[rule] = choose_weights([probs[(k, "valid")] for k in ks], y["valid"], classes,
                                               biases=b, anchor=rule.removeprefix("anchor "))
        for k in ks:  # each member alone, for reference
            choices[f"member {k}"] = (np.eye(len(ks))[ks.index(k)], {"rule": "member"})
        for (rule, (w, sel)), decision in ((c, d) for c in choices.items() for d in decisions):
            decide_on = {"members": b, "argmax": None}
            if decision == "gated":  # the members' rule where it beats the blend's argmax on validation beyond noise
                by = [point_predictions([probs[(k, "valid")] for k in ks], y["valid"], w[None], v)[0]
                      for v in (b, None)]
                share = float(np.mean(paired_bootstrap(*by, y["valid"], len(classes)) > 0))
                decide_on["gated"] = b if share >= CONFIDENCE else None
            name = rule if decision == "members" else f"{rule} ({decision})"
            for n in files:
                pred = point_predictions([probs[(k, n)] for k in ks], y[n], w[None], decide_on[decision])[0][0]
                m = classification_metrics(y[n], pred, classes)
                right[f"{combo}|{name}|{n}"] = pred == y[n]
                row = {"tag": a.tag, "combo": combo, "rule": name, "file": n, "n": len(y[n]),
                       "weights": [round(float(v), 3) for v in w], "chosen": sel.get("rule"),
                       "macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4),
                       "errors": int((pred != y[n]).sum()),
                       "rarest_class_f1": round(min(m["per_class"].values(), key=lambda c: c["support"])["f1"], 4)}
                if "out_of_fold" in sel:
                    o = sel["out_of_fold"]
                    row["oof"] = {k: round(v, 4) for k, v in o.items() if k.endswith("macro_f1") or k.startswith("gain")}
                if decision == "gated":
                    row["gate_share"] = round(share, 3)
                if "top_members" in sel:
                    row["top_members"] = [ks[j] for j in sel["top_members"]]
                    row["best_beats_share"] = [round(v, 3) for v in sel["best_beats_share"]]
                rows.append(row)
    names = [n for n in files]
    print(f"| {a.tag} | chosen (weights) | " + " | ".join(f"{n} macro-F1 (errors)" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for combo in combos:
        for rule in dict.fromkeys(r["rule"] for r in rows if r["combo"] == combo):  # choices' order
            rs = {r["file"]: r for r in rows if r["combo"] == combo and r["rule"] == rule}
            r0 = rs[names[0]]
            print(f"| {combo} {rule} | {r0['chosen']} ({', '.join(f'{v:.2f}' for v in r0['weights'])}) | "
                  + " | ".join(f"{rs[n]['macro_f1']:.4f} ({rs[n]['errors']})" for n in names) + " |")
    if a.rows:
        a.rows.parent.mkdir(parents=True, exist_ok=True)
        np.savez(a.rows, **right)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        with open(a.json, "a") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
