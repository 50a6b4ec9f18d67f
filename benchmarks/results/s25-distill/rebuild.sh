#!/bin/bash
# Issue 17, twenty-fifth session (a fresh machine: no kept folders): the all-label MiniLM teacher rebuilt with the
# harness (one thread) beside the two student LMs (`ulmfit finetune-lm` fwd then bwd on the other thread), into
# benchmarks/results/s25-full; then the 9-copy, drop_mult 0.25 student with seed 2 (its own copies), scored on test.
cd "$(dirname "$0")/../../.."   # the repository root
R=benchmarks/results/s25-full
date -u
OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/accuracy.py --datasets tweets --methods ulmfit-minilm \
  --budgets full --seeds 0, --threads 1 --out $R --keep-models > benchmarks/results/s25-distill/s25-full.teacher.log 2>&1 &
T=$!
while [ ! -f ~/.cache/ulmfit/tweets/v1/train.csv ]; do sleep 5; done
for d in fwd bwd; do
  OMP_NUM_THREADS=1 .venv/bin/ulmfit finetune-lm --train ~/.cache/ulmfit/tweets/v1/train.csv \
    --out $R/work/tweets/student-lm-$d --direction $d --overwrite > benchmarks/results/s25-distill/s25-full.lm-$d.log 2>&1
  echo "lm $d rc=$?"; date -u
done
wait $T; echo "teacher rc=$?"; date -u
R=$R benchmarks/results/s23-distill/student.sh 9 aug9-dm025-s2 runs/s25 2
