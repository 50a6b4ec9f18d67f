#!/bin/bash
# Issue 16's e-mail ensembles with a TF-IDF member (nineteenth session). Members: the kept model folders
# of benchmarks/results/s19-spam (accuracy.py --keep-models). Usage: ensembles.sh BUDGET VARIANT...
# VARIANT: at (AWD-LSTM fwd+bwd + TF-IDF), amt (+ MiniLM), am (AWD-LSTM + MiniLM), aa (two AWD-LSTM pairs,
# the second trained with seed 100: ulmfit-both-2), aam (+ MiniLM), aamt (+ TF-IDF); each with the
# validated rule and with equal weights. Ensembles in work/ens/; one JSON line each to ensembles.jsonl.
set -e
cd "$(dirname "$0")/../../.."
R=benchmarks/results/s19-spam; W=$R/work/accuracy; V=~/.cache/ulmfit/spam/v1
b=$1; shift
A=$W/spam__ulmfit-both__${b}__s0/model; T=$W/spam__tfidf-model__${b}__s0/model; M=$W/spam__ulmfit-minilm__${b}__s0/model
A2=$W/spam__ulmfit-both-2__${b}__s0/model
mkdir -p $R/work/ens
for v in "$@"; do
  case $v in at) m="$A $T";; amt) m="$A $M $T";; am) m="$A $M";; aa) m="$A $A2";; aam) m="$A $A2 $M";; aamt) m="$A $A2 $M $T";; esac
  for w in rule equal; do
    out=$R/work/ens/$b-$v-$w
    .venv/bin/ulmfit ensemble $m --valid $V/valid.csv --out $out --overwrite $([ $w = equal ] && echo --weights equal) > $out.log 2>&1
    .venv/bin/ulmfit evaluate $out --data $V/test.csv --json 2>/dev/null | tail -1 > $out.test.json
    B=$b VAR=$v WT=$w OUT=$out python3 -c '
import json, os
e = os.environ; d = json.load(open(e["OUT"] + ".test.json")); v = json.load(open(e["OUT"] + "/valid_metrics.json"))
print(json.dumps({"budget": e["B"], "members": e["VAR"], "weights": e["WT"], "test_macro_f1": round(d["macro_f1"], 4),
                  "test_accuracy": round(d["accuracy"], 4), "valid_macro_f1": round(v["macro_f1"], 4),
                  "chosen": v["weights"], "rule": v["selection"]["rule"],
                  "test_by_member": {k: round(m["macro_f1"], 4) for k, m in d.get("by_direction", {}).items()}}))'
  done | tee -a $R/ensembles.jsonl
done
