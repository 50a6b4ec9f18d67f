"""Paired comparison of ensemble rules with the single members on the same rows (ensemble_rules.py --rows):
per seed and file, the rows only one of the two gets right (b: the ensemble alone, c: the member alone) and the
exact two-sided McNemar p-value; then the seeds pooled (on "rest" different seeds are different e-mails, on
"test" the same 589).

Usage: paired_rules.py COMBO RULE NPZ...   e.g. paired_rules.py AM equal rows-500-s0.npz rows-500-s1.npz"""
import sys

import numpy as np
from scipy.stats import binomtest


def mcnemar(b: int, c: int) -> float:
    """Exact McNemar: the two-sided binomial test of b successes in b + c at one half."""
    return binomtest(b, b + c, 0.5).pvalue if b + c else 1.0


combo, rule, files = sys.argv[1], sys.argv[2], sys.argv[3:]
print("| file | rows | ensemble | vs | errors (ens / member) | ensemble alone right | member alone right | McNemar p |")
print("|---|---|---|---|---|---|---|---|")
for name in ("test", "rest"):
    pooled: dict[str, list[int]] = {}
    for f in files:
        r = dict(np.load(f))
        ens = r[f"{combo}|{rule}|{name}"]
        for mem in combo:
            m = r[f"{combo}|member {mem}|{name}"]
            b, c, e1, e2 = int((ens & ~m).sum()), int((~ens & m).sum()), int((~ens).sum()), int((~m).sum())
            acc = pooled.setdefault(mem, [0, 0, 0, 0])
            for i, v in enumerate((e1, e2, b, c)):
                acc[i] += v
            print(f"| {name} | {f} | {combo} {rule} | {mem} | {e1} / {e2} | {b} | {c} | {mcnemar(b, c):.3f} |")
    for mem, (e1, e2, b, c) in pooled.items():
        print(f"| {name} | pooled | {combo} {rule} | {mem} | {e1} / {e2} | {b} | {c} | {mcnemar(b, c):.3f} |")
