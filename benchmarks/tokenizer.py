"""Tokenizer throughput on the real tweets (train split), 1 and 2 worker processes.

    .venv/bin/python benchmarks/tokenizer.py [--repeat 5] [--copies 10] [--json benchmarks/results/tokenizer.json]

Prints a table (median of `--repeat` runs) and writes JSON. `--copies` concatenates the split with
itself so the input is large enough for worker processes to pay off (the auto mode uses them
from about 2M characters).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from ulmfit.data.fetch import fetch_tweets
from ulmfit.data.readers import read_table
from ulmfit.text.tokenize import Tokenizer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--json", default="benchmarks/results/tokenizer.json")
    a = p.parse_args()
    texts = read_table(fetch_tweets()["train"], "text", "label").texts * a.copies
    tok = Tokenizer()
    rows = []
    for workers in (1, 2):
        times, n_tokens = [], 0
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            out = tok.tokenize_many(texts, n_workers=workers)
            times.append(time.perf_counter() - t0)
            n_tokens = sum(map(len, out))
        med = statistics.median(times)
        rows.append({"workers": workers, "texts": len(texts), "tokens": n_tokens, "median_s": round(med, 3),
                     "tokens_per_s": round(n_tokens / med)})
    print(f"{'workers':>7} {'texts':>9} {'tokens':>11} {'median s':>9} {'tokens/s':>11}")
    for r in rows:
        print(f"{r['workers']:>7} {r['texts']:>9,} {r['tokens']:>11,} {r['median_s']:>9.3f} {r['tokens_per_s']:>11,}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows,
                                        "date": time.strftime("%Y-%m-%d")}, indent=2))


if __name__ == "__main__":
    main()
