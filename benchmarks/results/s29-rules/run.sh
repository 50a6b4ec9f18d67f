#!/bin/bash
# Issue 16, twenty-ninth session: the "top average" anchor beside the other weight rules (benchmarks/ensemble_rules.py),
# scored on the test split and on "rest" (the labelled training rows outside each label sample, which no member
# trained on; written by the harness's accuracy.split_sample). Usage: run.sh SET... where SET is one of
#   spam-500-S    e-mail, 500 labels, seed S: the twenty-eighth session's members (A, M, T)
#   spam-100-S    e-mail, 100 labels, seed S: this session's members (runs/s28-spam-100*, runs/s29-spam-100*)
#   spam-2000-S   e-mail, 2,000 labels, seed S: seed 0 this session's members (runs/s29-spam-2000m, -2000b), seeds 1-2
#                 the thirtieth session's (runs/s30-spam-2000m1, -2000b1, -2000m2, -2000b2)
#   spam-full-S   e-mail, all 4,708 labels, seeds 1-2 (no rest: every labelled row trained): seed 1 the thirty-first
#                 session's members (runs/s31-spam-fullm1, -fullb1), seed 2 the thirty-second's (runs/s32-spam-fullm2, -fullb2)
#   tweets-B-S    tweets, B labels, seed S: this session's members (runs/s29-tweets; 100, 500 and 2,000, seed 0); seed 1 at
#                 100, 500 and 2,000 the thirtieth session's, seed 2 at 2,000 the thirty-first's (runs/s30-tweets-a, -m)
#   tweets3-2000-S  tweets, 2,000 labels, seeds 0-2: the seventeenth session's member set (two MiniLM models M and B, B trained
#                 with seed 100+S, and the fwd+bwd student D of M) beside the AWD-LSTM pair A; B and D trained in the
#                 thirty-first session (B into runs/s31-tweets-b, D into runs/s30-tweets-m beside its teacher M; for seed 2 M and A too),
#                 seed 0 in the thirty-second (all four again: A into runs/s30-tweets-a, M and D into -m, B into runs/s31-tweets-b)
# Each member's probabilities are cached (runs/ensemble-rules-cache), so a set scores again in seconds.
# Environment: RULES_DIR, the folder for rules.jsonl and the rows-SET.npz files (default this one); RULES_ARGS, more
# arguments for ensemble_rules.py (e.g. "--decisions members,argmax,gated", thirty-third session).
set -e
cd "$(dirname "$0")/../../.."
DIR=${RULES_DIR:-benchmarks/results/s29-rules}
OUT=$DIR/rules.jsonl
E=~/.cache/ulmfit/spam/v1; T=~/.cache/ulmfit/tweets/v1
for set in "$@"; do
  IFS=- read -r ds budget seed <<< "$set"
  corpus=${ds%3}  # tweets3: the tweets' data and rest files (cached probabilities are keyed by path)
  data=$([ $corpus = spam ] && echo $E || echo $T)
  case $set in
    spam-500-*)
      M=benchmarks/results/$([ $seed = 0 ] && echo s28-spam-e || echo s28-spam)/work/accuracy/spam__ulmfit-minilm__500__s$seed/model
      W=benchmarks/results/s28-spam-b/work/accuracy
      members="A=$W/spam__ulmfit-both__500__s$seed/model M=$M T=$W/spam__tfidf-model__500__s$seed/model"; combos=AM,AMT ;;
    spam-100-*)
      # MiniLM (M) seed 0 resumed in runs/s28-spam-100, seeds 1 and 2 side by side in runs/s29-spam-100m and -100m2;
      # the AWD-LSTM pair (A) seed 0 in runs/s28-spam-100b, 1-2 in runs/s29-spam-100b with every TF-IDF model (T)
      M=runs/$(case $seed in 0) echo s28-spam-100;; 1) echo s29-spam-100m;; *) echo s29-spam-100m2;; esac)
      W=runs/$([ $seed = 0 ] && echo s28-spam-100b || echo s29-spam-100b); X=runs/s29-spam-100b
      members="A=$W/work/accuracy/spam__ulmfit-both__100__s$seed/model M=$M/work/accuracy/spam__ulmfit-minilm__100__s$seed/model"
      members="$members T=$X/work/accuracy/spam__tfidf-model__100__s$seed/model"; combos=AM,AMT ;;
    spam-2000-*)
      # seed 0 in runs/s29-spam-2000m and -2000b (twenty-ninth session, Intel); seeds 1 and 2 in runs/s30-spam-2000mS and
      # -2000bS (thirtieth session, AMD EPYC: one MiniLM cell, then the AWD-LSTM pair and the TF-IDF model, per seed)
      case $seed in 0) M=runs/s29-spam-2000m B=runs/s29-spam-2000b;; *) M=runs/s30-spam-2000m$seed B=runs/s30-spam-2000b$seed;; esac
      M=$M/work/accuracy/spam__ulmfit-minilm__2000__s$seed/model; W=$B/work/accuracy
      members="A=$W/spam__ulmfit-both__2000__s$seed/model M=$M T=$W/spam__tfidf-model__2000__s$seed/model"; combos=AM,AMT ;;
    spam-full-[12])
      # the thirty-first (seed 1) and thirty-second (seed 2) sessions, AMD EPYC: MiniLM (M) in runs/sNN-spam-fullmS, the
      # AWD-LSTM pair (A) and TF-IDF (T) in -fullbS
      M=runs/s3$seed-spam-fullm$seed/work/accuracy/spam__ulmfit-minilm__full__s$seed/model; W=runs/s3$seed-spam-fullb$seed/work/accuracy
      members="A=$W/spam__ulmfit-both__full__s$seed/model M=$M T=$W/spam__tfidf-model__full__s$seed/model"; combos=AM,AMT ;;
    tweets-*|tweets3-2000-[012])
      # tweets seed 0 in runs/s29-tweets (twenty-ninth session); every other in runs/s30-tweets-a and -m (thirtieth to thirty-second)
      case $ds-$seed in tweets-0) WA=runs/s29-tweets WM=runs/s29-tweets;; *) WA=runs/s30-tweets-a WM=runs/s30-tweets-m;; esac
      WA=$WA/work/accuracy; WM=$WM/work/accuracy
      members="A=$WA/tweets__ulmfit-both__${budget}__s$seed/model M=$WM/tweets__ulmfit-minilm__${budget}__s$seed/model"; combos=AM
      if [ $ds = tweets3 ]; then  # beside A and M: B (runs/s31-tweets-b) and M's student D (next to M)
        B=runs/s31-tweets-b/work/accuracy/tweets__ulmfit-minilm-2__${budget}__s$seed/model
        members="$members B=$B D=$WM/tweets__distill__${budget}__s$seed/model"; combos=MB,MBD,AMB,AMBD
      fi ;;
    *) echo "run.sh: unknown set $set" >&2; exit 2 ;;
  esac
  score="test=$data/test.csv"
  if [ $budget != full ]; then  # with all labels no labelled row is left out of training: test only
    # the 500-label e-mail sets keep the twenty-eighth session's rest files (its cached probabilities are keyed by path)
    R=$([ $ds-$budget = spam-500 ] && echo runs/s28-rest || echo runs/s29-rest)
    rest=$R/$corpus-rest-$budget-s$seed.csv
    mkdir -p $R
    PYTHONPATH=src:benchmarks .venv/bin/python -c "
from accuracy import read_split, split_sample  # the harness's own label samples
split_sample(read_split('$data/train.csv'), $budget, $seed)[1].to_csv('$rest', index=False)"
    score="$score rest=$rest"
  fi
  PYTHONPATH=src .venv/bin/python benchmarks/ensemble_rules.py --tag $set --members $members --valid $data/valid.csv \
    --score $score --combos $combos --json $OUT --rows $DIR/rows-$set.npz $RULES_ARGS
done
