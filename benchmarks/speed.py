"""Speed and memory, ours against fastai 2.8 (and MiniLM for prediction), on identical inputs and
model sizes, in one run; every measurement in its own subprocess (so each peak RSS is its own).

    nice -n 10 .venv/bin/python benchmarks/speed.py --quick      # ~3-5 minutes: checks the pipeline
    nice -n 10 .venv/bin/python benchmarks/speed.py              # defaults below
    nice -n 10 .venv/bin/python benchmarks/speed.py --preset paper --lm-steps 20   # fastai's default model size

Inputs: the tweets train split (`fetch_tweets`). Tokenizer: the same texts (x --copies) through our
Tokenizer and fastai's `tokenize_texts` (its rules + spaCy), 1 and 2 worker processes. LM training:
the tweets tokenized by us and numericalised (vocabulary --max-vocab) into one id stream, saved to
.npy and read by both; same AWD-LSTM size (--preset, default `small` 128/256/3), drop_mult 0.3, bs,
bptt, steps; tokens/s of the training phase only (forward + AR/TAR + backward + step). Classifier:
the same token ids per tweet + labels (.npz), one epoch with every layer trainable, bs 64, bptt 72.
Prediction: raw text to class, models of the same size with untrained weights (the cost does not
depend on the values), one text at a time (median and p95 latency) and in bulk (texts/s), ours also
through onnxruntime (the same folder exported to ONNX at load, `ulmfit.load(DIR, runtime="onnx")`) and on
the exact fp32 path (`precision="fp32"`; the default `auto` runs the encoder in bf16 on a CPU with native
bf16); MiniLM
is all-MiniLM-L6-v2 with a sequence-classification head (22.7M parameters). Ratios are ours / theirs
for rates (>1: we are faster) and theirs / ours for times and memory (>1: we are faster/smaller),
so above 1 always means better for us. Writes benchmarks/results/speed.json (speed-quick.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PEER_PY, RESULTS, machine_info, package_versions, read_json, run_measured, table, tail, write_json  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"
SCRIPTS = {"ours": (PEER_PY["ours"], "speed_ours.py"), "fastai": (PEER_PY["fastai"], "speed_fastai.py"),
           "minilm": (PEER_PY["hf"], "speed_minilm.py")}
SIZES = {"small": dict(emb_sz=128, n_hid=256, n_layers=3), "paper": dict(emb_sz=400, n_hid=1152, n_layers=3),
         "tiny": dict(emb_sz=16, n_hid=32, n_layers=2)}
# (fastai's default n_hid is 1152, ours 1150: 1152 is used for both with --preset paper)


def prepare(a, work: Path) -> dict:
    """Texts and the shared numericalised inputs, written once per settings."""
    from ulmfit.data.fetch import fetch_tweets
    from ulmfit.data.readers import read_table
    from ulmfit.text.tokenize import Tokenizer
    from ulmfit.text.vocab import Vocab

    table_ = read_table(fetch_tweets()["train"], "text", "label")
    texts, labels = table_.texts[: a.texts], table_.labels[: a.texts]
    work.mkdir(parents=True, exist_ok=True)
    (work / "tok_texts.json").write_text(json.dumps(texts * a.copies))
    (work / "texts.json").write_text(json.dumps(texts))
    tok = Tokenizer()
    toks = tok.tokenize_many(texts)
    vocab = Vocab.build(toks, min_freq=3, max_vocab=a.max_vocab)
    docs = vocab.encode_many(toks)
    arrays = [np.asarray(docs[i], dtype=np.int64) for i in range(len(docs))]
    stream = np.concatenate(arrays)
    need = a.bs * a.bptt * (max(a.lm_steps, 3) + 1) + 1
    stream = np.tile(stream, -(-need // len(stream)))[:need]
    np.save(work / "stream.npy", stream)
    classes = sorted(set(labels))
    y = np.array([classes.index(l) for l in labels], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in arrays])])
    np.savez(work / "docs.npz", ids=np.concatenate(arrays), offsets=offsets, labels=y)
    return {"texts": len(texts), "tok_texts": len(texts) * a.copies, "vocab_size": len(vocab),
            "stream_tokens": int(len(stream)), "clf_docs": len(arrays), "clf_tokens": int(offsets[-1])}


def thread_env(threads: int | None) -> dict | None:
    """Environment for a subprocess limited to `threads` intra-op threads (None: torch's default)."""
    if not threads:
        return None
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def measure(who: str, job: dict, work: Path, timeout: float, threads: int | None = None,
            pythonpath: str | None = None) -> dict:
    py, script = SCRIPTS[who]
    name = f"{who}-{job.get('name', job['task'])}" + (f"-w{job['workers']}" if "workers" in job else "")
    if not Path(py).exists():
        return {"status": "unavailable", "reason": f"{py} missing: bash benchmarks/setup_peers.sh"}
    jp, rp = work / f"{name}.job.json", work / f"{name}.result.json"
    rp.unlink(missing_ok=True)
    write_json(jp, {**job, "threads": threads})
    env = thread_env(threads)
    if pythonpath:
        env = {**(env or os.environ), "PYTHONPATH": pythonpath}
    r = run_measured([str(py), str(PEERS / script), str(jp), str(rp)], log_path=work / f"{name}.log", timeout=timeout,
                     env=env)
    if r["rc"] != 0 or not rp.exists():
        print(f"  {name}: FAILED (rc {r['rc']})\n{tail(work / f'{name}.log', 8)}", flush=True)
        return {"status": "failed", "rc": r["rc"], "log_tail": tail(work / f"{name}.log")}
    res = read_json(rp)
    res.update(status="ok", peak_rss_mb=r["peak_rss_mb"], process_wall_s=r["wall_s"], process_cpu_s=r["cpu_s"])
    print(f"  {name}: done in {r['wall_s']:.0f}s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small inputs: checks the pipeline in a few minutes")
    p.add_argument("--preset", choices=sorted(SIZES), default="small")
    p.add_argument("--texts", type=int, default=None, help="tweets used (default 29,757 = all; quick 2,000)")
    p.add_argument("--copies", type=int, default=None, help="tokenizer input = texts x copies (default 1)")
    p.add_argument("--repeat", type=int, default=None, help="tokenizer repeats, median (default 3; quick 1)")
    p.add_argument("--max-vocab", type=int, default=30000)
    p.add_argument("--bs", type=int, default=32, help="LM batch size")
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--lm-steps", type=int, default=None, help="timed LM steps (default 100; quick 10)")
    p.add_argument("--clf-bs", type=int, default=64)
    p.add_argument("--n-single", type=int, default=None, help="texts for single-text latency (default 200; quick 30)")
    p.add_argument("--n-batch", type=int, default=None, help="texts for batch throughput (default 3,000; quick 500)")
    p.add_argument("--only", default="tokenize,lm,clf,predict", help="comma list of parts")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every subprocess (default: torch's, "
                   "= cores). Use 1 when another job shares the cores: 2 threads on a contended core slow down ~10x")
    p.add_argument("--lm-repeat", type=int, default=1, help="interleaved rounds of the LM measurements, median kept")
    p.add_argument("--baseline-src", default=None, help="also time LM training (fp32) with the ulmfit package under "
                   "this src/ folder (e.g. an export of an older commit): ours-before vs ours-after in the same run")
    p.add_argument("--json", default=None, help="output (default benchmarks/results/speed.json / speed-quick.json)")
    a = p.parse_args()
    q = a.quick
    a.texts = a.texts or (2000 if q else 10**9)
    a.copies = a.copies or 1
    a.repeat = a.repeat or (1 if q else 3)
    a.lm_steps = a.lm_steps or (10 if q else 100)
    a.n_single = a.n_single or (30 if q else 200)
    a.n_batch = a.n_batch or (500 if q else 3000)
    tag = "speed-quick" if q else "speed"
    work = RESULTS / "work" / tag
    t_start = time.perf_counter()
    print("preparing inputs ...", flush=True)
    data = prepare(a, work)
    size = {**SIZES[a.preset], "drop_mult": 0.3}
    info = {"machine": machine_info(), "versions": package_versions(), "settings": {**vars(a), **size}, "inputs": data}
    print(f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, GPU {info['machine']['gpu']}; "
          f"load average {info['machine']['load_avg_at_start']}; inputs {data}", flush=True)
    parts = a.only.split(",")
    res: dict[str, dict] = {}
    if "tokenize" in parts:
        for w in (1, 2):
            for who in ("ours", "fastai"):
                res[f"tokenize-w{w}-{who}"] = measure(who, {"task": "tokenize", "texts": str(work / "tok_texts.json"),
                                                            "workers": w, "repeat": a.repeat}, work, a.timeout, a.threads)
    common_lm = {"stream": str(work / "stream.npy"), "vocab_size": data["vocab_size"], "bs": a.bs, "bptt": a.bptt,
                 "steps": a.lm_steps, "warmup_steps": 3, **size}
    if "lm" in parts:
        # each tool's defaults (ours: precision auto, fastai: fp32), ours at fastai's precision, and
        # optionally the baseline code; --lm-repeat rounds interleave them (load drifts on a shared
        # machine) and each keeps its median round
        runs = {"lm-ours": ("ours", {}, None), "lm-fastai": ("fastai", {}, None),
                "lm-ours-fp32": ("ours", {"name": "lm-fp32", "precision": "fp32"}, None)}
        if a.baseline_src:
            runs["lm-baseline-fp32"] = ("ours", {"name": "lm-baseline", "precision": "fp32"},
                                        str(Path(a.baseline_src).resolve()))
        rounds: dict[str, list[dict]] = {k: [] for k in runs}
        for _ in range(a.lm_repeat):
            for key, (who, extra, src) in runs.items():
                rounds[key].append(measure(who, {"task": "lm", **common_lm, **extra}, work, a.timeout, a.threads,
                                           pythonpath=src))
        for key, rs in rounds.items():
            ok = sorted((r for r in rs if r.get("status") == "ok"), key=lambda r: r["tokens_per_s"])
            res[key] = {**ok[len(ok) // 2], "rounds_tokens_per_s": [round(r["tokens_per_s"]) for r in ok]} if ok else rs[-1]
    if "clf" in parts:
        for who in ("ours", "fastai"):
            res[f"clf-{who}"] = measure(who, {"task": "clf", "docs": str(work / "docs.npz"), "vocab_size": data["vocab_size"],
                                              "bs": a.clf_bs, "bptt": 72, **size}, work, a.timeout, a.threads)
    if "predict" in parts:
        job = {"task": "predict", "texts": str(work / "texts.json"), "fit_texts": str(work / "texts.json"),
               "n_single": a.n_single, "n_batch": a.n_batch, "max_vocab": a.max_vocab, **size}
        for who in ("ours", "fastai", "minilm"):
            res[f"predict-{who}"] = measure(who, job, work, a.timeout, a.threads)
        res["predict_onnx-ours"] = measure("ours", {**job, "task": "predict_onnx"}, work, a.timeout, a.threads)
        res["predict_fp32-ours"] = measure("ours", {**job, "task": "predict_fp32"}, work, a.timeout, a.threads)

    rows = build_rows(res)
    print()
    print(table(rows, ["measure", "unit", "ours", "fastai", "minilm", "ours/fastai", "ours/minilm", "note"],
                {"ours": ",", "fastai": ",", "minilm": ","}))
    out = Path(a.json) if a.json else RESULTS / f"{tag}.json"
    write_json(out, {**info, "seconds": round(time.perf_counter() - t_start, 1), "rows": rows, "raw": res})
    print(f"\nwritten: {out} ({time.perf_counter() - t_start:.0f} s)")


def build_rows(res: dict) -> list[dict]:
    """One row per figure; ratio > 1 always means better for us (rates ours/theirs, times and memory theirs/ours)."""
    rows = []

    def val(key, field):
        r = res.get(key) or {}
        return r.get(field) if r.get("status") == "ok" else None

    def add(measure, unit, keys: dict, field, higher_better, note=""):
        v = {who: val(k, field) for who, k in keys.items()}
        row = {"measure": measure, "unit": unit, "note": note}
        for who in ("ours", "fastai", "minilm"):
            row[who] = None if v.get(who) is None else (round(v[who]) if v[who] >= 100 else round(v[who], 2))
        for other in ("fastai", "minilm"):
            if v.get("ours") and v.get(other):
                ratio = v["ours"] / v[other] if higher_better else v[other] / v["ours"]
                row[f"ours/{other}"] = f"{ratio:.2f}x"
        rows.append(row)

    for w in (1, 2):
        add(f"tokenizer, {w} worker{'s' * (w > 1)}", "tokens/s", {"ours": f"tokenize-w{w}-ours", "fastai": f"tokenize-w{w}-fastai"},
            "tokens_per_s", True)
    prec = (res.get("lm-ours") or {}).get("precision", "?")
    add("LM training, defaults", "tokens/s", {"ours": "lm-ours", "fastai": "lm-fastai"}, "tokens_per_s", True,
        f"ours {prec}, fastai fp32")
    add("LM training, both fp32", "tokens/s", {"ours": "lm-ours-fp32", "fastai": "lm-fastai"}, "tokens_per_s", True)
    if "lm-baseline-fp32" in res:
        add("LM training, fp32, --baseline-src", "tokens/s", {"ours": "lm-baseline-fp32", "fastai": "lm-fastai"},
            "tokens_per_s", True, "ours = the baseline code")
    add("classifier training", "s/epoch", {"ours": "clf-ours", "fastai": "clf-fastai"}, "seconds_per_epoch", False)
    pk = {"ours": "predict-ours", "fastai": "predict-fastai", "minilm": "predict-minilm"}
    pprec = f"ours {(res.get('predict-ours') or {}).get('precision', '?')} (default precision auto)"
    add("predict 1 text, median", "ms", pk, "latency_ms_median", False, pprec)
    add("predict 1 text, p95", "ms", pk, "latency_ms_p95", False, pprec)
    add("predict in bulk", "texts/s", pk, "batch_texts_per_s", True, pprec)
    pf = {**pk, "ours": "predict_fp32-ours"}
    add("predict 1 text, median, ours fp32 (exact)", "ms", pf, "latency_ms_median", False)
    add("predict 1 text, p95, ours fp32 (exact)", "ms", pf, "latency_ms_p95", False)
    add("predict in bulk, ours fp32 (exact)", "texts/s", pf, "batch_texts_per_s", True)
    po = {**pk, "ours": "predict_onnx-ours"}
    add("predict 1 text, median, ours in onnxruntime", "ms", po, "latency_ms_median", False)
    add("predict 1 text, p95, ours in onnxruntime", "ms", po, "latency_ms_p95", False)
    add("predict in bulk, ours in onnxruntime", "texts/s", po, "batch_texts_per_s", True)
    for part, keys in (("tokenizer w1", {"ours": "tokenize-w1-ours", "fastai": "tokenize-w1-fastai"}),
                       ("LM training", {"ours": "lm-ours", "fastai": "lm-fastai"}),
                       ("classifier training", {"ours": "clf-ours", "fastai": "clf-fastai"}), ("prediction", pk)):
        add(f"peak RSS, {part}", "MB", keys, "peak_rss_mb", False, "whole subprocess")
    return rows


if __name__ == "__main__":
    main()
