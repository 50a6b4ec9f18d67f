#!/bin/bash
# Issue 17, twenty-third session: the all-label student with COPIES perturbed copies per text, last stage 6 epochs,
# every dropout at drop_mult 0.25 (0.5 before), then scored on test. Ran as `student.sh 6 aug6-dm025` (the 6-copy
# run's folder copied there first, so its teacher caches are reused) and `student.sh 9 aug9-dm025`; the
# twenty-fourth session's `student.sh 12 aug12-dm025 runs/s24` and `student.sh 9 aug9-dm025-s1 runs/s24 1` (RUNS,
# the third argument, defaults to runs/s23; SEED, the fourth, to 0: the student's seed and its copies').
# Env LAST: the last stage's epochs (default 6; the twenty-sixth session's `LAST=9`); env LM: the student LMs'
# folders less their -fwd / -bwd (default $R/work/tweets/student-lm); env EXTRA: more `ulmfit distill` options.
COPIES=$1 NAME=$2 RUNS=${3:-runs/s23} SEED=${4:-0}
cd "$(dirname "$0")/../../.."   # the repository root
R=${R:-benchmarks/results/s22-full}   # the teacher's and student LMs' harness folder (env R: another)
LAST=${LAST:-6} LM=${LM:-$R/work/tweets/student-lm}
date -u
OMP_NUM_THREADS=2 .venv/bin/ulmfit distill --teacher $R/work/accuracy/tweets__ulmfit-minilm__full__s0/model \
  --train ~/.cache/ulmfit/tweets/v1/train.csv --valid ~/.cache/ulmfit/tweets/v1/valid.csv \
  --out $RUNS/$NAME --overwrite --seed $SEED --direction both \
  --pretrained $LM-fwd --pretrained-bwd $LM-bwd \
  --set lm.epochs=0 --set lm.frozen_epochs=0 --augment $COPIES --set "clf.epochs=[1,1,1,$LAST]" --set clf.drop_mult=0.25 $EXTRA
echo "distill rc=$?"; date -u
.venv/bin/ulmfit evaluate $RUNS/$NAME --data ~/.cache/ulmfit/tweets/v1/test.csv --json
date -u
