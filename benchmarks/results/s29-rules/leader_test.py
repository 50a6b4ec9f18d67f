"""The "top average" anchor's leader test at another confidence, from the recorded rules (no model is run).

recipes/ensemble.py `top_members` leaves a member out when the best member on validation beats it in at least
CONFIDENCE (95%) of paired bootstrap resamples: a one-sided test at 5%. But the leader is itself picked on
those rows, so between two members of one strength the test drops one about twice as often as 5% (either may
come out ahead). A two-sided test (97.5%) corrects that. From each set's recorded `best_beats_share` this
prints which members the anchor would average at that confidence beside those the recorded default averaged
(`top_members`), and what each average (the "equal" rule of the combination holding just those members, or
the member alone) scored on test and rest, where rules.jsonl has that combination; "n/a" where it does not.

    python3 benchmarks/results/s29-rules/leader_test.py [--confidence 0.975]
"""
import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent


def read_rules(path: Path) -> dict:
    """rules.jsonl (benchmarks/ensemble_rules.py --json) keyed by (tag, combination, rule, file); a set scored again
    replaces its earlier rows."""
    d = {}
    for line in open(path):
        r = json.loads(line)
        d[r["tag"], r["combo"], r["rule"], r["file"]] = r
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--confidence", type=float, default=0.975)
    ap.add_argument("--json", type=Path, default=HERE / "rules.jsonl")
    a = ap.parse_args()
    d = read_rules(a.json)
    combos = {(t, c) for t, c, _, _ in d}

    def score(tag, combo, members, f):
        """The plain average of `members` (or the member alone) on file f, from any recorded combination."""
        if len(members) == 1:
            r = d.get((tag, combo, f"member {members[0]}", f))
        else:
            c = next((c for t, c in combos if t == tag and sorted(c) == sorted(members)), None)
            r = d.get((tag, c, "equal", f)) if c else None
        return r["macro_f1"] if r else None

    print(f"| set | members | leader beats each (share) | averaged by the default | at {a.confidence} | "
          f"test default / {a.confidence} | rest default / {a.confidence} |")
    print("|---|---|---|---|---|---|---|")
    tally = {"same": 0, "ahead": 0, "behind": 0, "level": 0, "n/a": 0}
    for tag, combo in sorted(combos):
        r = d.get((tag, combo, "anchor top average", "valid"))
        if not r or "best_beats_share" not in r:
            continue
        shares = r["best_beats_share"]
        default = [k for k in combo if k in r["top_members"]]  # what the recorded default averaged, in combo order
        at_c = [k for k, s in zip(combo, shares) if s < a.confidence]
        files = [f for f in ("test", "rest") if (tag, combo, "equal", f) in d]
        vals = {f: (score(tag, combo, default, f), score(tag, combo, at_c, f)) for f in files}
        cells = ["-" if f not in vals else "n/a" if None in vals[f] else f"{vals[f][0]:.4f} / {vals[f][1]:.4f}"
                 for f in ("test", "rest")]
        x, y = vals[files[-1]]  # rest where scored, else test
        tally["same" if default == at_c else "n/a" if None in (x, y) else
              "ahead" if y > x else "behind" if y < x else "level"] += 1
        print(f"| {tag} | {combo} | {', '.join(f'{k} {s:.3f}' for k, s in zip(combo, shares))} | {''.join(default)} | "
              f"{''.join(at_c)} | {cells[0]} | {cells[1]} |")
    print(f"\nat {a.confidence} against the default (rest where scored, else test): "
          + ", ".join(f"{k} {v}" for k, v in tally.items()))

if __name__ == "__main__":
    main()
