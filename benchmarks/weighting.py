"""The quick measurement behind `imbalance.rule` (issue 21): which loss weighting, none / inverse
frequency ("balanced") / effective number of samples (Cui et al. 2019, beta 0.999), on TF-IDF +
logistic regression (C chosen on validation), the 40/55/5 tweets, 500 / 2,000 / all labels, seed 0:

    PYTHONPATH=src .venv/bin/python benchmarks/weighting.py      # ~1 min; prints one line per cell

A proxy (a linear model, seconds per cell) for the rule the recipes' losses use (the same
`ulmfit.train.calibration.class_weights`); its output is in docs/BENCHMARKS.md, "Imbalanced classes".
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402

from ulmfit.recipes.baselines import tfidf_logreg  # noqa: E402
from ulmfit.train.calibration import class_weights  # noqa: E402


def main() -> None:
    d = A.load_datasets([A.IMBALANCED], [], [])[A.IMBALANCED]
    tr, va, te = (A.read_split(d[k]) for k in ("train", "valid", "test"))
    classes = sorted(set(tr.label))
    for budget in (500, 2000, "full"):
        idx = np.arange(len(tr)) if budget == "full" else A.stratified_sample(tr.label.to_numpy(), budget, 0)
        sub = tr.iloc[idx]
        y = np.array([classes.index(l) for l in sub.label])
        for rule in ("none", "balanced", "effective"):
            w = class_weights(y, len(classes), rule, 0.999)
            cw = None if w is None else {c: float(w[i]) for i, c in enumerate(classes)}
            predict, info = tfidf_logreg(list(sub.text), list(sub.label), list(va.text), list(va.label), class_weight=cw)
            f = f1_score(te.label, predict(list(te.text)), labels=classes, average=None)
            print(f"{budget!s:>5} {rule:9s} test macro-F1 {f.mean():.4f} {classes[-1]} F1 {f[-1]:.4f} C {info['C']}",
                  flush=True)


if __name__ == "__main__":
    main()
