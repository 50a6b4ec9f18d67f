"""Peak memory of a transformer classifier on long documents (issue 16: MiniLM on SpamAssassin).

Each measured task runs in its own process (peak RSS from os.wait4, `common.run_measured`), once per
source tree given (`--src NAME=PATH`: e.g. the code before a change and after it), at one thread:

  predict  `ulmfit.load(FOLDER).predict_proba` over the `--n-predict` longest texts of `--data`
  train    `--steps` optimizer steps (AdamW, every encoder layer trainable, the fit's precision) on
           one batch of the `--n-train` longest texts (the recipe's batch size: 16)

Prints a table, writes JSON (`--out`), and compares the sources' predicted probabilities (max
absolute difference) and training losses. Example (the numbers in docs/BENCHMARKS.md):

  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/long_docs.py \
      --folder benchmarks/results/work/accuracy/spam__ulmfit-minilm__500__s0/model \
      --data benchmarks/results/work/spam/samples/n500-s0/train.csv \
      --src before=/work/main/src --src after=src --out benchmarks/results/long_docs_spam.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import OUR_PY, machine_info, read_json, run_measured, table, write_json


def longest(path: str, n: int) -> list[str]:
    """The n longest texts (characters) of a CSV's `text` column, longest first."""
    import pandas as pd

    texts = pd.read_csv(path)["text"].fillna("").astype(str).tolist()
    return sorted(texts, key=len, reverse=True)[:n]


def task_predict(a) -> dict:
    import numpy as np
    import ulmfit

    model = ulmfit.load(a.folder)
    texts = longest(a.data, a.n_predict)
    t0 = time.perf_counter()
    probs = model.predict_proba(texts)
    np.save(Path(a.result).with_suffix(".npy"), probs)
    return {"texts": len(texts), "chars": sum(map(len, texts)), "seconds": round(time.perf_counter() - t0, 2)}


def task_train(a) -> dict:
    import torch
    import torch.nn.functional as F

    from ulmfit.data.cls_loader import ClassificationLoader
    from ulmfit.recipes.transformer import load_transformer_classifier
    from ulmfit.train.precision import autocast, resolve_precision

    torch.manual_seed(0)
    model, text = load_transformer_classifier(Path(a.folder))
    texts = longest(a.data, a.n_train)
    tokens = text.tokenize_many(texts)
    labels = [i % model.cfg.n_classes for i in range(len(texts))]  # any labels: the memory is the same
    batch = next(iter(ClassificationLoader(text.encode_many(tokens), labels, bs=len(texts), shuffle=False,
                                           pad_idx=text.pad_id)))
    for p in model.backbone.bert.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    precision = resolve_precision("auto")
    model.train()
    losses, t0 = [], time.perf_counter()
    for _ in range(a.steps):
        with autocast(precision):
            loss = F.cross_entropy(model(batch.ids, batch.lengths).float(), batch.labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss), 6))
    return {"texts": len(texts), "word_pieces": int(sum(map(len, tokens))), "longest": max(map(len, tokens)),
            "precision": precision, "losses": losses, "seconds": round(time.perf_counter() - t0, 2)}


def child(a) -> None:
    import torch

    torch.set_num_threads(1)
    out = {"predict": task_predict, "train": task_train}[a.task](a)
    write_json(Path(a.result), out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", required=True, help="a transformer classifier folder (ulmfit fit --backbone minilm)")
    p.add_argument("--data", required=True, help="CSV with a text column: its longest texts are used")
    p.add_argument("--src", action="append", default=None, help="NAME=PATH of a source tree (PYTHONPATH); repeatable")
    p.add_argument("--tasks", default="predict,train")
    p.add_argument("--n-predict", type=int, default=50)
    p.add_argument("--n-train", type=int, default=16, help="the batch (the transformer recipe's bs: 16)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.task:
        return child(a)
    import numpy as np

    out = Path(a.out or "long_docs.json")
    work = out.parent / "work" / out.stem  # per-process logs and probabilities (benchmarks/results/**/work/: not committed)
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()  # before the runs: the load they started under
    rows = []
    for src in a.src or [f"this={Path(__file__).resolve().parents[1] / 'src'}"]:
        name, path = src.split("=", 1)
        env = {**os.environ, "PYTHONPATH": str(Path(path).resolve()), "OMP_NUM_THREADS": "1"}
        for task in a.tasks.split(","):
            result = work / f"{name}-{task}.json"
            cmd = [str(OUR_PY), __file__, "--task", task, "--result", str(result), "--folder", a.folder,
                   "--data", a.data, "--n-predict", str(a.n_predict), "--n-train", str(a.n_train), "--steps", str(a.steps)]
            r = run_measured(cmd, log_path=work / f"{name}-{task}.log", env=env)
            row = {"src": name, "task": task, "rc": r["rc"], "peak_rss_mb": r["peak_rss_mb"], "wall_s": r["wall_s"]}
            if r["rc"] == 0:
                row.update(read_json(result))
            rows.append(row)
            print(table([row], ["src", "task", "rc", "peak_rss_mb", "wall_s", "seconds"]), flush=True)
    names = [s.split("=", 1)[0] for s in a.src or ["this"]]
    compare = {}
    if len(names) > 1 and "predict" in a.tasks:
        probs = [np.load(work / f"{n}-predict.npy") for n in names if (work / f"{n}-predict.npy").exists()]
        if len(probs) == len(names):
            compare["predict_max_abs_diff"] = float(max(np.abs(p - probs[0]).max() for p in probs))
    print(table(rows, ["src", "task", "rc", "peak_rss_mb", "wall_s", "seconds"]))
    print(json.dumps(compare))
    if a.out:
        write_json(out, {"machine": machine, "args": vars(a), "rows": rows, "compare": compare})


if __name__ == "__main__":
    sys.exit(main())
