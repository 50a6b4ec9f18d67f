"""Paired comparison of the ensembles with their members on the same rows (ens_eval.py's heldout/*.npz):
per seed and file, the e-mails only one of the two gets right (b: the ensemble alone, c: the member alone)
and the exact two-sided McNemar p-value; then the seeds pooled (the rows of different seeds are different
e-mails on "rest", the same 589 on "test").

Usage: paired.py SEED...   e.g. paired.py 0 1 2"""
import sys
from math import comb
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def mcnemar(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(0, min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


print("| file | seed | ensemble | vs | errors (ens / member) | ensemble alone right | member alone right | McNemar p |")
print("|---|---|---|---|---|---|---|---|")
for name in ("test", "rest"):
    pooled: dict[tuple, list[int]] = {}
    for s in sys.argv[1:]:
        f = HERE / "heldout" / f"{name}-s{s}.npz"
        if not f.exists():
            continue
        r = dict(np.load(f))
        for ens in (k for k in r if "-" in k):
            for mem in ("A", "M"):
                b, c = int((r[ens] & ~r[mem]).sum()), int((~r[ens] & r[mem]).sum())
                e1, e2 = int((~r[ens]).sum()), int((~r[mem]).sum())
                acc = pooled.setdefault((ens, mem), [0, 0, 0, 0])
                for i, v in enumerate((e1, e2, b, c)):
                    acc[i] += v
                print(f"| {name} | {s} | {ens} | {mem} | {e1} / {e2} | {b} | {c} | {mcnemar(b, c):.3f} |")
    for (ens, mem), (e1, e2, b, c) in pooled.items():
        print(f"| {name} | pooled | {ens} | {mem} | {e1} / {e2} | {b} | {c} | {mcnemar(b, c):.3f} |")
