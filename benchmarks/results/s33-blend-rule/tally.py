"""How the blend decides, from rules.jsonl (no model is run): the ensemble's own decision ("members", the members'
decision rules weighted like their probabilities) against the blend's plain argmax and the gated rule (the members'
rule only where it beats that argmax on validation in 95% of paired resamples), for the default rule's weights
("anchor top average") and for `--weights equal`. Written by

    RULES_DIR=benchmarks/results/s33-blend-rule RULES_ARGS="--decisions members,argmax,gated" \
        bash benchmarks/results/s29-rules/run.sh SET...
    python3 benchmarks/results/s33-blend-rule/tally.py

A set's combinations that chose the same weights on the same members make one decision: each is counted once.
The rows-SET.npz files run.sh also writes there (each row right or wrong, 14 MB) are not kept.
"""
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "s29-rules"))
from leader_test import read_rules  # noqa: E402  (the one reader of a rules.jsonl)
DECISIONS = ("members", "argmax", "gated")


def main() -> None:
    d = read_rules(HERE / "rules.jsonl")
    for rule in ("anchor top average", "equal"):
        print(f"\n{rule}: macro-F1 (errors) by decision")
        print("| set | combination | weights | gate share | test members / argmax / gated | rest members / argmax / gated |")
        print("|---|---|---|---|---|---|")
        seen, tally = set(), {(f, x): [0, 0, 0] for f in ("test", "rest") for x in DECISIONS[1:]}
        for tag, combo in sorted((t, c) for t, c, r, f in d if r == rule and f == "valid"):
            rows = {(x, f): d.get((tag, combo, rule if x == "members" else f"{rule} ({x})", f))
                    for x in DECISIONS for f in ("valid", "test", "rest")}
            w = rows["members", "valid"]["weights"]
            # tweets3-2000-S holds tweets-2000-S's members A and M (the same folders): one decision where they agree
            key = (tag.replace("tweets3", "tweets"), tuple(k for k, v in zip(combo, w) if v), tuple(v for v in w if v))
            cells = []
            for f in ("test", "rest"):
                if rows["members", f] is None:
                    cells.append("-")
                    continue
                cells.append(" / ".join(f"{rows[x, f]['macro_f1']:.4f} ({rows[x, f]['errors']})" for x in DECISIONS))
                if key not in seen:
                    for x in DECISIONS[1:]:
                        diff = rows[x, f]["macro_f1"] - rows["members", f]["macro_f1"]
                        tally[f, x][0 if diff > 0 else 1 if diff < 0 else 2] += 1
            dup = "" if key not in seen else " (same decision as above)"
            seen.add(key)
            print(f"| {tag} | {combo}{dup} | {', '.join(f'{v:.2f}' for v in w)} | {rows['gated', 'valid']['gate_share']:.3f} | "
                  + " | ".join(cells) + " |")
        for (f, x), (up, down, level) in tally.items():
            print(f"{rule}, {f}: {x} against the members' rule: ahead on {up}, behind on {down}, level on {level} "
                  f"distinct decisions")


if __name__ == "__main__":
    main()
