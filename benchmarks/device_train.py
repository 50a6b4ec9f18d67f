"""Training on a CUDA GPU against the CPU of the same machine, side by side in one run.

    PYTHONPATH=src python3 benchmarks/device_train.py --data DIR [--rounds 3] [--fit] [--json PATH]

DIR holds the tweets splits as `ulmfit.data.fetch.fetch_tweets` writes them (train.csv, valid.csv,
test.csv; ~/.cache/ulmfit/tweets/v1 here). The GPU machine (the `device` tool) has no registry, so
the splits travel with the command.

1. LM training throughput: `ulmfit pretrain` over the training texts (one per line), presets `small`
   and `paper` (fastai's 400/1152/3), bs 32, bptt 70, one epoch over a token budget (--cpu-tokens on
   the CPU, --gpu-tokens on the GPU: the figure is a rate), fp32 and `auto` (bf16 autocast where the
   hardware computes it natively), `--device cpu` (torch's default threads) and `--device cuda` (at each
   of --gpu-bs: a GPU is bound by the step's fixed cost at bs 32).
   Figure: the history's train_tokens_per_s (the training phase only). Rounds alternate the set-ups
   (A B C ... A B C), the table gives every round and the median.
2. With --fit (run first): `ulmfit fit` as the accuracy harness runs ulmfit-both (fwd+bwd on the shipped
   general-en, every training row, seed 0) with `--device cuda`, then `ulmfit evaluate` on the test
   split: wall time and test macro-F1, to set beside the CPU's (docs/BENCHMARKS.md).

Writes benchmarks/results/device_train.json (or --json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info, run_measured, table, tail, write_json  # noqa: E402

PY = sys.executable
SETUPS = [  # (preset, device, precision); the CPU's paper preset only in fp32 (it is slow: a small budget)
    ("small", "cpu", "fp32"), ("small", "cpu", "auto"), ("small", "cuda", "fp32"), ("small", "cuda", "auto"),
    ("paper", "cpu", "fp32"), ("paper", "cuda", "fp32"), ("paper", "cuda", "auto")]


def corpus_of(data: Path, work: Path) -> Path:
    """The training split's texts as a pretraining corpus folder (shards/*.txt, one document per line)."""
    import pandas as pd

    shards = work / "corpus" / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    texts = pd.read_csv(data / "train.csv").text.astype(str)
    (shards / "tweets.txt").write_text("".join(" ".join(t.split()) + "\n" for t in texts))
    return shards.parent


def pretrain_run(corpus: Path, out: Path, preset: str, device: str, precision: str, tokens: int, bs: int,
                 logs: Path) -> dict:
    name = f"pretrain-{preset}-{device}-{precision}-bs{bs}"
    cmd = [PY, "-m", "ulmfit", "pretrain", "--corpus", str(corpus), "--out", str(out), "--overwrite", "--preset", preset,
           "--device", device, "--set", f"max_train_tokens={tokens}", "--set", "epochs=1", "--set", f"bs={bs}",
           "--set", "bptt=70", "--set", "checkpoint_every=1000000", "--set", f"precision={precision}"]
    r = run_measured(cmd, logs / f"{name}.log", timeout=1800)
    if r["rc"] != 0:
        raise SystemExit(f"{name} failed:\n{tail(logs / f'{name}.log')}")
    last = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines() if line.strip()][-1]
    card = json.loads((out / "pretrain_config.json").read_text())
    return {"preset": preset, "device": device, "precision": precision, "bs": bs, "resolved": card.get("precision"),
            "tokens": tokens, "tokens_per_s": last["train_tokens_per_s"], "train_s": last["seconds"],
            "valid_loss": round(last["valid_loss"], 4), "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"]}


def fit_run(data: Path, work: Path, logs: Path) -> dict:
    """ulmfit-both with every label on the GPU (the accuracy harness's command, benchmarks/accuracy.py)."""
    out = work / "fit"
    cmd = [PY, "-m", "ulmfit", "fit", "--out", str(out), "--seed", "0", "--overwrite", "--valid", str(data / "valid.csv"),
           "--train", str(data / "train.csv"), "--direction", "both", "--backbone", "awd_lstm", "--device", "cuda"]
    r = run_measured(cmd, logs / "fit.log", timeout=3600)
    if r["rc"] != 0:
        raise SystemExit(f"fit failed:\n{tail(logs / 'fit.log')}")
    ev = run_measured([PY, "-m", "ulmfit", "evaluate", str(out), "--data", str(data / "test.csv"), "--json"],
                      logs / "evaluate.log", timeout=600)
    if ev["rc"] != 0:
        raise SystemExit(f"evaluate failed:\n{tail(logs / 'evaluate.log')}")
    m = json.loads(ev["stdout"].strip().splitlines()[-1])
    return {"fit_wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"], "test_macro_f1": round(m["macro_f1"], 4),
            "test_accuracy": round(m["accuracy"], 4), "n_test": m["n"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="folder with the tweets splits (train/valid/test.csv)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu-tokens", type=int, default=100_000)
    p.add_argument("--gpu-tokens", type=int, default=1_000_000)
    p.add_argument("--setups", default="all", help="comma-separated indices into SETUPS, or all")
    p.add_argument("--gpu-bs", default="32", help="comma-separated batch sizes for the GPU set-ups (the CPU's: 32)")
    p.add_argument("--fit", action="store_true", help="also the all-label ulmfit-both fit on the GPU")
    p.add_argument("--json", type=Path, default=RESULTS / "device_train.json")
    a = p.parse_args()
    setups = SETUPS if a.setups == "all" else [SETUPS[int(i)] for i in a.setups.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ulmfit-device-"))
    logs = a.json.parent / (a.json.stem + "-logs")
    corpus = corpus_of(a.data, work)
    result = {"machine": machine_info(), "settings": {k: str(v) for k, v in vars(a).items()},
              "command": "PYTHONPATH=src python3 benchmarks/device_train.py " + " ".join(sys.argv[1:])}
    if a.fit:  # first: the figure a user asks first (how long, how accurate)
        result["fit"] = fit_run(a.data, work, logs)
        write_json(a.json, result)
        print(json.dumps(result["fit"]), flush=True)
    runs = [(p, d, q, bs) for p, d, q in setups for bs in ([int(b) for b in a.gpu_bs.split(",")] if d == "cuda" else [32])]
    rows = []
    for k in range(a.rounds):  # each round runs every set-up once: a load change hits them alike
        for i, (preset, dev, prec, bs) in enumerate(runs):
            tokens = a.gpu_tokens if dev == "cuda" else a.cpu_tokens // (4 if preset == "paper" else 1)
            rows.append(pretrain_run(corpus, work / f"lm{i}", preset, dev, prec, tokens, bs, logs) | {"round": k})
            print(json.dumps(rows[-1]), flush=True)
    median = {f"{p} {d} {q} bs{bs}": statistics.median(r["tokens_per_s"] for r in rows
                                                        if (r["preset"], r["device"], r["precision"], r["bs"]) == (p, d, q, bs))
              for p, d, q, bs in runs}
    result |= {"training": rows, "median_tokens_per_s": median}
    write_json(a.json, result)
    print(table(rows, ["round", "preset", "device", "precision", "bs", "resolved", "tokens", "tokens_per_s", "train_s",
                       "valid_loss", "wall_s", "peak_rss_mb"]))
    print(json.dumps(median, indent=2), flush=True)


if __name__ == "__main__":
    main()
