"""`--direction both`: the two models one after the other against side by side (fit's
`parallel_directions`: two processes, half of torch's threads each), on the demo's real workload,
every run its own subprocess.

    /work/bin/quiet env PYTHONPATH=src .venv/bin/python benchmarks/parallel_directions.py --threads 2   # ~16 min on 2 idle cores
    ... parallel_directions.py --threads 2 --settings on --json benchmarks/results/parallel_directions-on.json  # one setting: < 10 min
    nice -n 10 .venv/bin/python benchmarks/parallel_directions.py --quick --threads 1   # a few minutes: checks the pipeline

The run: `ulmfit fit` on the tweets (`fetch_tweets`: train, valid) with the demo's config
(src/ulmfit/demo.py `demo_config`: general-en and general-en-bwd, each LM 1 frozen + 3 epochs on
all the tweets' text, the classifier 1+1+1+3 epochs), with `--set parallel_directions=off` and
`=on`, each with --threads torch threads (OMP_NUM_THREADS), then `ulmfit evaluate` on the test
split. Figures per run: wall seconds of the whole `fit` command (start-up, tokenizing, both models,
post-hoc: what a user waits for), its CPU seconds and peak RSS (the largest process), the
validation macro-F1 of each model and of the average, the test macro-F1; then the speed-up (median
wall time off / on) and the largest test macro-F1 difference between the two settings. Equal models
need equal threads per model: with --threads 2 the sequential models train on 2 threads and the
parallel ones on 1, so the figures may differ by float rounding (tests/test_parallel_directions.py
checks bit-identical models at 1 thread per model). --rounds alternates off, on, off, on ... so a
load spike on a shared machine hits both alike. Writes benchmarks/results/parallel_directions.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info, run_measured, table, tail, write_json  # noqa: E402

PY = sys.executable


def config_file(work: Path, quick: bool) -> Path:
    """The demo's config (quick: a small slice of it, to check the pipeline) as a --config file."""
    from ulmfit.demo import demo_config

    cfg = demo_config()
    if quick:
        cfg.lm = replace(cfg.lm, max_train_tokens=20_000, epochs=1)
        cfg.data = replace(cfg.data, max_labels=600)
        cfg.clf = replace(cfg.clf, epochs=(1, 0, 0, 1))
    path = work / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def run(setting: str, splits: dict, config: Path, out: Path, threads: int, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = out.parent / f"{out.name}.log"
    fit = run_measured([PY, "-m", "ulmfit", "fit", "--train", str(splits["train"]), "--valid", str(splits["valid"]),
                        "--out", str(out), "--config", str(config), "--backbone", "awd_lstm",
                        "--set", f"parallel_directions={setting}"],
                       log_path=log, timeout=timeout, env=env)
    row = {"setting": setting, "threads": threads, "rc": fit["rc"], "wall_s": fit["wall_s"], "cpu_s": fit["cpu_s"],
           "peak_rss_mb": fit["peak_rss_mb"],
           "plan": next((l for l in log.read_text().splitlines() if l.startswith("directions:")), None)}
    if fit["rc"] != 0:
        print(f"fit {setting} failed (rc {fit['rc']}):\n{tail(log)}", file=sys.stderr)
        return row
    valid = json.loads((out / "valid_metrics.json").read_text())
    row.update({f"valid_{d}": m["macro_f1"] for d, m in valid["by_direction"].items()}, valid_avg=valid["macro_f1"])
    ev = run_measured([PY, "-m", "ulmfit", "evaluate", str(out), "--data", str(splits["test"]), "--json"],
                      log_path=out.parent / f"{out.name}.evaluate.log", timeout=timeout, env=env)
    if ev["rc"] == 0:
        test = json.loads(ev["stdout"])
        row.update(test_f1=test["macro_f1"], test_accuracy=test["accuracy"])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads of each fit command (default 2)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of off + on (alternating), median kept")
    p.add_argument("--settings", default="off,on", help="comma list of parallel_directions settings to run (default off,on)")
    p.add_argument("--quick", action="store_true", help="a small slice of the workload: checks the pipeline")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per command")
    p.add_argument("--json", default=None, help="output (default benchmarks/results/parallel_directions[-quick].json)")
    a = p.parse_args()
    from ulmfit.data.fetch import fetch_tweets

    info = machine_info()
    splits = fetch_tweets()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ulmfit-parallel-") as tmp:
        work = Path(tmp)
        config = config_file(work, a.quick)
        for r in range(a.rounds):
            for setting in a.settings.split(","):
                row = {"round": r + 1, **run(setting, splits, config, work / f"{setting}-{r}", a.threads, a.timeout)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    wall = {s: statistics.median(x["wall_s"] for x in rows if x["setting"] == s and x["rc"] == 0)
            for s in ("off", "on", "auto") if any(x["setting"] == s and x["rc"] == 0 for x in rows)}
    f1 = [x.get("test_f1") for x in rows if x.get("test_f1") is not None]
    summary = {"median_wall_s": wall,
               "speedup_off_over_on": round(wall["off"] / wall["on"], 3) if {"off", "on"} <= set(wall) else None,
               "test_f1_max_diff": round(max(f1) - min(f1), 4) if len(f1) >= 2 else None}
    cols = ["round", "setting", "threads", "wall_s", "cpu_s", "peak_rss_mb", "valid_fwd", "valid_bwd", "valid_avg",
            "test_f1"]
    print(table(rows, cols, {c: ".4f" for c in ("valid_fwd", "valid_bwd", "valid_avg", "test_f1")}))
    print(json.dumps(summary))
    out = Path(a.json) if a.json else RESULTS / f"parallel_directions{'-quick' if a.quick else ''}.json"
    write_json(out, {"machine": info, "args": vars(a), "rows": rows, "summary": summary})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
