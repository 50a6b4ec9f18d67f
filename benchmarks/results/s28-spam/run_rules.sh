#!/bin/bash
# Issue 16, twenty-eighth session: the e-mail ensembles at 500 labels, seeds 1 and 2, every weight rule
# (benchmarks/ensemble_rules.py) on the test split and on "rest": the 4,208 training e-mails outside each seed's
# 500-label sample, labelled (the text the harness passed as --unlabeled; no member trained on its labels).
# Members: the harness's kept folders, M = ulmfit-minilm (--out benchmarks/results/s28-spam for seeds 1-2,
# s28-spam-e for seed 0), A = ulmfit-both and T = tfidf-model (--out benchmarks/results/s28-spam-b; the nineteenth
# session's sizing S). Usage: run_rules.sh SEED...
set -e
cd "$(dirname "$0")/../../.."
HERE=benchmarks/results/s28-spam
R=${REST_DIR:-runs/s28-rest}
mkdir -p $R
PYTHONPATH=src:benchmarks .venv/bin/python - "$R" "$@" <<'PY'
import sys
from pathlib import Path
from accuracy import read_split, split_sample  # the harness's own label samples
from ulmfit.data.fetch_lib import cache_dir
train = read_split(cache_dir() / "spam" / "v1" / "train.csv")
for s in sys.argv[2:]:
    out = Path(sys.argv[1]) / f"spam-rest-500-s{s}.csv"
    if not out.exists():
        split_sample(train, 500, int(s))[1].to_csv(out, index=False)
PY
S=~/.cache/ulmfit/spam/v1
for s in "$@"; do
  if [ $s = 0 ]; then M=$HERE-e; else M=$HERE; fi
  M=$M/work/accuracy/spam__ulmfit-minilm__500__s$s/model
  W=benchmarks/results/s28-spam-b/work/accuracy
  PYTHONPATH=src .venv/bin/python benchmarks/ensemble_rules.py --tag spam-500-s$s --members A=$W/spam__ulmfit-both__500__s$s/model \
    M=$M T=$W/spam__tfidf-model__500__s$s/model --valid $S/valid.csv \
    --score test=$S/test.csv rest=$R/spam-rest-500-s$s.csv --combos AM,AMT --json $HERE/rules.jsonl --rows $HERE/rows-500-s$s.npz
done
