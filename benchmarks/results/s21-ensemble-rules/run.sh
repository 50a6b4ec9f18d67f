#!/bin/bash
# Issue 16, twenty-first session: the ensemble's weight rules on the kept member folders (benchmarks/ensemble_rules.py).
# E-mail, 2,000 labels, seeds 0-2 (members of benchmarks/results/s19-spam and s20-spam); tweets, seed 0, 100 and
# 2,000 labels (benchmarks/results/s21-tweets). "rest": the training rows outside each label sample, labelled
# (the text the harness passed as --unlabeled), written beside the runs by accuracy.sample_mask.
set -e
cd "$(dirname "$0")/../../.."
OUT=benchmarks/results/s21-ensemble-rules/rules.jsonl
R=${REST_DIR:-/work/runs/s21}
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
