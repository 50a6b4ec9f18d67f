#!/bin/bash
# Issue 17, twenty-second session: the all-label student with 6 perturbed copies per text, last stage 6 epochs
cd /work/main
R=benchmarks/results/s22-full
while [ ! -f $R/accuracy/tweets__ulmfit-minilm__full__s0.json ]; do sleep 20; done
date -u
OMP_NUM_THREADS=2 .venv/bin/ulmfit distill --teacher $R/work/accuracy/tweets__ulmfit-minilm__full__s0/model \
  --train ~/.cache/ulmfit/tweets/v1/train.csv --valid ~/.cache/ulmfit/tweets/v1/valid.csv \
  --out runs/s22/student-full-aug6-e6 --overwrite --seed 0 --direction both \
  --pretrained $R/work/tweets/student-lm-fwd --pretrained-bwd $R/work/tweets/student-lm-bwd \
  --set lm.epochs=0 --set lm.frozen_epochs=0 --augment 6 --set 'clf.epochs=[1,1,1,6]'
echo "distill rc=$?"; date -u
.venv/bin/ulmfit evaluate runs/s22/student-full-aug6-e6 --data ~/.cache/ulmfit/tweets/v1/test.csv --json
date -u
