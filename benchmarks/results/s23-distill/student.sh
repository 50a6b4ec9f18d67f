#!/bin/bash
# Issue 17, twenty-third session: the all-label student with COPIES perturbed copies per text, last stage 6 epochs,
# every dropout at drop_mult 0.25 (0.5 before), then scored on test. Ran as `student.sh 6 aug6-dm025` (the 6-copy
# run's folder copied there first, so its teacher caches are reused) and `student.sh 9 aug9-dm025`.
COPIES=$1 NAME=$2
cd /work/main
R=benchmarks/results/s22-full
date -u
OMP_NUM_THREADS=2 .venv/bin/ulmfit distill --teacher $R/work/accuracy/tweets__ulmfit-minilm__full__s0/model \
  --train ~/.cache/ulmfit/tweets/v1/train.csv --valid ~/.cache/ulmfit/tweets/v1/valid.csv \
  --out runs/s23/$NAME --overwrite --seed 0 --direction both \
  --pretrained $R/work/tweets/student-lm-fwd --pretrained-bwd $R/work/tweets/student-lm-bwd \
  --set lm.epochs=0 --set lm.frozen_epochs=0 --augment $COPIES --set 'clf.epochs=[1,1,1,6]' --set clf.drop_mult=0.25
echo "distill rc=$?"; date -u
.venv/bin/ulmfit evaluate runs/s23/$NAME --data ~/.cache/ulmfit/tweets/v1/test.csv --json
date -u
