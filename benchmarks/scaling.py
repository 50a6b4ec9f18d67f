"""Scale-out on one machine: language-model training on 1 and 2 processes (torchrun, gloo) and
`ulmfit predict --workers 1|2`, side by side in one run, each measurement its own subprocess.

    nice -n 10 .venv/bin/python benchmarks/scaling.py            # ~15 minutes on 2 busy cores
    nice -n 10 .venv/bin/python benchmarks/scaling.py --quick    # ~3 minutes: checks the pipeline

Training: `ulmfit pretrain` of the `small` preset on the tweets train texts (one document per line,
--lm-tokens tokens, one epoch, bs 32, bptt 70, fp32), with the same global batch on one process with one
thread and on two processes with one thread each (`torchrun --standalone --nproc_per_node 2`), and
with --default-threads (or --quick) one process with torch's default threads too. Figure: the history's train_tokens_per_s (the
training phase only, all ranks' tokens). Prediction: a classifier folder on the shipped general-en
LM (head trained briefly; the speed does not depend on the weights), --texts tweets, wall time of
the whole command (start-up and model loading included) and its peak RSS (the largest process).
Rounds alternate the set-ups (A B A B ...) so a load spike on the shared machine hits all of
them alike; the table gives every round and the median. Writes benchmarks/results/scaling.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info, run_measured, table, tail, write_json  # noqa: E402

PY = sys.executable
TORCHRUN = [PY, "-m", "torch.distributed.run", "--standalone"]


def prepare(work: Path, n_texts: int) -> tuple[Path, Path, Path]:
    from ulmfit.data.fetch import fetch_tweets
    from ulmfit.data.readers import read_table

    splits = fetch_tweets()
    train = read_table(splits["train"], "text", "label")
    corpus = work / "corpus" / "shards"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "tweets.txt").write_text("".join(" ".join(t.split()) + "\n" for t in train.texts))
    import pandas as pd

    pd.DataFrame({"text": train.texts[:300], "label": train.labels[:300]}).to_csv(work / "labelled.csv", index=False)
    texts = (train.texts * (n_texts // len(train.texts) + 1))[:n_texts]
    pd.DataFrame({"text": texts}).to_csv(work / "texts.csv", index=False)
    return corpus.parent, work / "labelled.csv", work / "texts.csv"


def env_with(**kw) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE")}
    return {**env, **kw}


def pretrain_run(corpus: Path, out: Path, setup: str, lm_tokens: int, logs: Path) -> dict:
    args = ["-m", "ulmfit", "pretrain", "--corpus", str(corpus), "--out", str(out), "--overwrite", "--preset", "small",
            "--set", f"max_train_tokens={lm_tokens}", "--set", "epochs=1", "--set", "bs=32", "--set", "bptt=70",
            "--set", "checkpoint_every=1000000", "--set", "precision=fp32"]
    if setup == "2 processes x 1 thread":
        cmd, env = TORCHRUN + ["--nproc_per_node", "2"] + args, env_with()
    elif setup == "1 process x 1 thread":
        cmd, env = [PY] + args, env_with(OMP_NUM_THREADS="1")
    else:
        cmd, env = [PY] + args, env_with()
    log = logs / ("pretrain-" + setup.replace(" ", "_") + ".log")
    r = run_measured(cmd, log, env=env, timeout=3600)
    if r["rc"] != 0:
        raise SystemExit(f"pretrain ({setup}) failed:\n{tail(log)}")
    hist = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines() if l.strip()]
    return {"setup": setup, "tokens_per_s": hist[-1]["train_tokens_per_s"], "train_seconds": hist[-1]["seconds"],
            "valid_loss": round(hist[-1]["valid_loss"], 4), "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
            "peak_rss_mb": r["peak_rss_mb"]}


def predict_run(model: Path, texts: Path, n: int, setup: str, logs: Path, work: Path) -> dict:
    out = work / "pred.csv"
    workers = "2" if setup.startswith("2") else "1"
    cmd = [PY, "-m", "ulmfit", "predict", str(model), "--data", str(texts), "--out", str(out), "--workers", workers]
    env = env_with(OMP_NUM_THREADS="1") if setup == "1 worker x 1 thread" else env_with()
    log = logs / f"predict-{workers}.log"
    r = run_measured(cmd, log, env=env, timeout=3600)
    if r["rc"] != 0:
        raise SystemExit(f"predict ({setup}) failed:\n{tail(log)}")
    return {"setup": setup, "texts_per_s": round(n / r["wall_s"], 1), "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
            "texts_per_cpu_s": round(n / max(r["cpu_s"], 1e-9), 1), "peak_rss_mb": r["peak_rss_mb"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--lm-tokens", type=int, default=100_000)
    p.add_argument("--texts", type=int, default=12_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--default-threads", action="store_true",
                   help="also one process with torch's default threads (slow on a loaded machine)")
    a = p.parse_args()
    if a.quick:
        a.lm_tokens, a.texts, a.rounds = 30_000, 3_000, 1
    info = machine_info()
    work = Path(tempfile.mkdtemp(prefix="ulmfit-scaling-"))
    logs = work / "logs"
    corpus, labelled, texts = prepare(work, a.texts)
    setups = ["1 process x 1 thread", "2 processes x 1 thread"]
    psetups = ["1 worker x 1 thread", "2 workers x 1 thread"]
    if a.default_threads or a.quick:
        setups, psetups = ["1 process x default threads"] + setups, ["1 worker x default threads"] + psetups
    train_rows = [pretrain_run(corpus, work / f"lm{i}", s, a.lm_tokens, logs) | {"round": k}
                  for k in range(a.rounds) for i, s in enumerate(setups)]
    model = work / "clf"
    r = run_measured([PY, "-m", "ulmfit", "fit", "--train", str(labelled), "--out", str(model), "--backbone", "awd_lstm", "--pretrained",
                      "general-en", "--set", "lm.epochs=0", "--set", "lm.frozen_epochs=0",
                      "--set", "clf.epochs=[1,1,1,1]", "--set", "clf.min_steps_per_epoch=0"],
                     logs / "fit.log", env=env_with(), timeout=3600)
    if r["rc"] != 0:
        raise SystemExit(f"fit failed:\n{tail(logs / 'fit.log')}")
    pred_rows = [predict_run(model, texts, a.texts, s, logs, work) | {"round": k}
                 for k in range(a.rounds) for s in psetups]
    summary = {"training": {s: statistics.median(r["tokens_per_s"] for r in train_rows if r["setup"] == s)
                            for s in setups},
               "predict": {s: statistics.median(r["texts_per_s"] for r in pred_rows if r["setup"] == s)
                           for s in psetups}}
    result = {"machine": info, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()], "settings": vars(a),
              "training": train_rows, "predict": pred_rows, "median": summary,
              "command": "nice -n 10 .venv/bin/python benchmarks/scaling.py" + (" --quick" if a.quick else "")}
    write_json(RESULTS / f"scaling{'-quick' if a.quick else ''}.json", result)
    print(table(train_rows, ["round", "setup", "tokens_per_s", "train_seconds", "valid_loss", "wall_s", "cpu_s",
                             "peak_rss_mb"]))
    print()
    print(table(pred_rows, ["round", "setup", "texts_per_s", "wall_s", "cpu_s", "texts_per_cpu_s", "peak_rss_mb"]))
    print()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
