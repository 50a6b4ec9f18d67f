#!/bin/bash
# The GPU check of train/device.py (docs/BENCHMARKS.md, "Training on a GPU"): run on the `device` machine.
export PYTHONPATH=$PWD/src:$PWD/tests PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
STAGE=${1:-all}
{ date -u; nvidia-smi -L; lscpu | grep -m1 "Model name"; nproc
  python3 -c "import torch, transformers, numpy, pandas, sklearn; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.version.cuda, 'transformers', transformers.__version__, 'numpy', numpy.__version__)"
  python3 -c "from ulmfit.train.precision import bf16_lstm_ok; print('bf16 LSTM on cuda:', bf16_lstm_ok('cuda'))"; } 2>&1 | tee $OUT/info.txt
if [ "$STAGE" = all ] || [ "$STAGE" = tests ]; then
  echo "== GPU tests"; date -u
  timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_device.py -rs --durations=5 2>&1 | tee $OUT/test_device.log | tail -25
fi
if [ "$STAGE" = all ] || [ "$STAGE" = bench ]; then
  echo "== the all-label fit and LM throughput"; date -u
  timeout 400 python3 benchmarks/device_train.py --data .device/tweets --rounds 1 --fit --json $OUT/device_train.json 2>&1 | tail -30
  cp -r $OUT/device_train-logs $OUT/logs 2>/dev/null; (cd $OUT && tar czf logs.tgz device_train-logs && rm -rf device_train-logs logs)
fi
if [ "$STAGE" = suite ]; then
  echo "== the whole suite, training on the GPU (auto)"; date -u
  if [ -n "$ALL" ]; then MARK=(); else MARK=(-m "not slow"); fi
  timeout ${SUITE_S:-200} python3 -m pytest -q -p no:cacheprovider -n 12 tests/ "${MARK[@]}" --durations=15 2>&1 | tee $OUT/suite.log | tail -45
fi
date -u
