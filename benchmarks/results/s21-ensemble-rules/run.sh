#!/bin/bash
# Issue 16, twenty-first session: the ensemble's weight rules on the kept member folders (benchmarks/ensemble_rules.py).
# E-mail, 2,000 labels, seeds 0-2 (members of benchmarks/results/s19-spam and s20-spam); tweets, seed 0, 100 and
# 2,000 labels (benchmarks/results/s21-tweets). "rest": the training rows outside each label sample, labelled
# (the text the harness passed as --unlabeled), written to $REST_DIR by accuracy.split_sample (below); the few-label
# runs are the tweets-40-55-5 cells at the end.
set -e
cd "$(dirname "$0")/../../.."
OUT=benchmarks/results/s21-ensemble-rules/rules.jsonl
rm -f $OUT  # every line written again below
R=${REST_DIR:-runs/s21-rest}
mkdir -p $R
PYTHONPATH=src:benchmarks .venv/bin/python - "$R" <<'PY'
import sys
from pathlib import Path
from accuracy import read_split, split_sample  # the harness's own label samples
from ulmfit.data.fetch_lib import cache_dir
for ds, budget, seeds in (("spam", 2000, (0, 1, 2)), ("tweets", 2000, (0,)), ("tweets", 100, (0, 1)), ("tweets-40-55-5", 500, (6, 1, 5))):
    train = read_split(cache_dir() / ds / "v1" / "train.csv")
    for s in seeds:
        out = Path(sys.argv[1]) / f"{ {'tweets-40-55-5': 'imb'}.get(ds, ds)}-rest-{budget}-s{s}.csv"
        if not out.exists():
            split_sample(train, budget, s)[1].to_csv(out, index=False)
PY
S=~/.cache/ulmfit/spam/v1; T=~/.cache/ulmfit/tweets/v1
for s in 0 1 2; do
  W=benchmarks/results/$([ $s = 0 ] && echo s19-spam || echo s20-spam)/work/accuracy
  PYTHONPATH=src .venv/bin/python benchmarks/ensemble_rules.py --tag spam-2000-s$s --members A=$W/spam__ulmfit-both__2000__s$s/model \
    M=$W/spam__ulmfit-minilm__2000__s$s/model T=$W/spam__tfidf-model__2000__s$s/model --valid $S/valid.csv \
    --score test=$S/test.csv rest=$R/spam-rest-2000-s$s.csv --combos AM,AMT --json $OUT
done
W=benchmarks/results/s21-tweets/work/accuracy
for b in 2000 100; do
  PYTHONPATH=src .venv/bin/python benchmarks/ensemble_rules.py --tag tweets-$b-s0 --members A=$W/tweets__ulmfit-both__${b}__s0/model \
    M=$W/tweets__ulmfit-minilm__${b}__s0/model --valid $T/valid.csv --score test=$T/test.csv rest=$R/tweets-rest-$b-s0.csv \
    --combos AM --json $OUT
done
# the few-label path as `fit` runs it (40/55/5 tweets, 500 labels; accuracy.py --methods ulmfit-default --keep-models,
# --out benchmarks/results/s21-default-sN): its teacher (members/m0) and student (members/m1)
I=~/.cache/ulmfit/tweets-40-55-5/v1
for s in 6 1 5; do
  M=benchmarks/results/s21-default-s$s/work/accuracy/tweets-40-55-5__ulmfit-default__500__s$s/model
  PYTHONPATH=src .venv/bin/python benchmarks/ensemble_rules.py --tag imb-500-s$s --members M=$M/members/m0 S=$M/members/m1 \
    --valid $I/valid.csv --score test=$I/test.csv rest=$R/imb-rest-500-s$s.csv --combos MS --json $OUT
done
# tweets, 100 labels, seed 1: M in s21-tweets, A in s21-tweets-b (two harness runs side by side)
PYTHONPATH=src .venv/bin/python benchmarks/ensemble_rules.py --tag tweets-100-s1 \
  --members A=benchmarks/results/s21-tweets-b/work/accuracy/tweets__ulmfit-both__100__s1/model \
  M=benchmarks/results/s21-tweets/work/accuracy/tweets__ulmfit-minilm__100__s1/model --valid $T/valid.csv \
  --score test=$T/test.csv rest=$R/tweets-rest-100-s1.csv --combos AM --json $OUT
