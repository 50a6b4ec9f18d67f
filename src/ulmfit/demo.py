"""`make demo`: the ULMFiT recipe on real tweets, next to a TF-IDF + logistic-regression baseline.

Fetches the tweets set (3 sentiment classes, see `ulmfit.data.fetch`), trains a classifier with
`ulmfit.fit` on its train split (selection on the valid split), evaluates once on the held-out
test split and prints both models' figures. Sized to finish in about 10 minutes on 2 CPU cores:
what is cut to fit is printed, not hidden.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ulmfit.data.fetch import fetch_tweets
from ulmfit.data.readers import read_table
from ulmfit.recipes.baselines import tfidf_logreg
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.model_dir import resolve_pretrained
from ulmfit.recipes.fit import fit
from ulmfit.train.metrics import classification_metrics


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def demo_config(pretrained: str | None = "auto") -> FitConfig:
    """The recipe the README recommends, with the library's defaults: forward + backward models,
    averaged (ULMFiT §4), each LM fine-tuned on all the tweets' text (1 frozen + 4 epochs), the
    classifier with gradual unfreezing (1+1+1+3 epochs), the two models side by side
    (`parallel_directions=auto`). Its time and score: docs/BENCHMARKS.md, "make demo"."""
    return FitConfig(recipe="ulmfit", pretrained=pretrained, direction="both")  # the AWD-LSTM, pinned


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo-tweets")
    p.add_argument("--pretrained", default="auto",
                   help="language model to start from (default: the shipped general-en when installed; 'none')")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    paths = fetch_tweets()
    log(f"tweets: {', '.join(f'{k} {v}' for k, v in paths.items())}")
    cfg = demo_config(a.pretrained)
    lm_text = f"at most {cfg.lm.max_train_tokens:,} tokens" if cfg.lm.max_train_tokens else "all the tweets' text"
    log(f"demo sizing: forward and backward models; each language model on {lm_text} for {cfg.lm.frozen_epochs} "
        f"frozen + {cfg.lm.epochs} epochs, '{cfg.lm.preset}' model; classifier stages {cfg.clf.epochs} epochs "
        f"(full training split)")
    model = fit(paths["train"], paths["valid"], out=a.out, config=cfg, overwrite=True, log=log)

    train = read_table(paths["train"], "text", "label")
    valid = read_table(paths["valid"], "text", "label")
    test = read_table(paths["test"], "text", "label")
    ours = model.evaluate(test.texts, test.labels, source=str(paths["test"]))
    predict, info = tfidf_logreg(train.texts, train.labels, valid.texts, valid.labels, log=log)
    classes = model.classes
    index = {c: i for i, c in enumerate(classes)}
    base = classification_metrics([index[l] for l in test.labels], [index[l] for l in predict(test.texts)], classes)

    start = resolve_pretrained(a.pretrained)
    recipe = "ulmfit fwd+bwd" if cfg.direction == "both" else f"ulmfit {cfg.direction}"
    rows = [(f"{recipe} ({start.name} LM)" if start else f"{recipe} (no pretrained LM)", ours),
            (f"tfidf + logreg (C={info['C']})", base)]
    print(f"\nTweets test split: {len(test.texts):,} tweets, classes {classes}\n")
    header = f"{'model':34s} {'accuracy':>9s} {'macro-F1':>9s} " + " ".join(f"{'F1 ' + c:>12s}" for c in classes)
    print(header)
    print("-" * len(header))
    for name, m in rows:
        per = " ".join(f"{m['per_class'][c]['f1']:12.4f}" for c in classes)
        print(f"{name:34s} {m['accuracy']:9.4f} {m['macro_f1']:9.4f} {per}")
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nTotal demo time {minutes:.1f} min. Model folder: {a.out} (report.md, history.png).")
    summary = {name: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]} for name, m in rows}
    Path(a.out, "demo_results.json").write_text(json.dumps({"test": summary, "minutes": minutes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
