#!/bin/bash
# Issue 17, twenty-sixth session: the student LMs again (`ulmfit finetune-lm` on the training split, fwd then bwd,
# as the harness and s25-distill/rebuild.sh make them), with `--set lm.known_min_freq=1`: the words general-en
# knows kept from one occurrence in the tweets (9,472 -> ~13,000 words), into benchmarks/results/s26-known/.
cd "$(dirname "$0")/../../.."   # the repository root
O=benchmarks/results/s26-known/work/tweets
for d in fwd bwd; do
  OMP_NUM_THREADS=${THREADS:-1} .venv/bin/ulmfit finetune-lm --train ~/.cache/ulmfit/tweets/v1/train.csv \
    --out $O/student-lm-$d --direction $d --overwrite --set lm.known_min_freq=1 > benchmarks/results/s26-distill/known-lm-$d.log 2>&1
  echo "lm $d rc=$?"; date -u
done
