"""Bounded load test of `ulmfit serve` on loopback: latency percentiles, requests/s, errors and the
server's resident memory over the run, for 1 and 2 workers, against the in-process bulk figure.

    nice -n 10 .venv/bin/python benchmarks/loadtest.py --model DIR --workers 1,2 --duration 60
    nice -n 10 .venv/bin/python benchmarks/loadtest.py --make-model /tmp/lt-model ...   # builds DIR first

What it does, per worker count: starts `ulmfit serve DIR --host 127.0.0.1 --port <free port>` as a
subprocess, waits for /ready, sends --warmup seconds of load (not counted), then runs --concurrency asyncio+httpx clients, each sending POST
/predict with --texts-per-request tweets (the tweets train split, or --texts FILE.json) in a loop until
--duration seconds or --max-requests requests in all, whichever comes first; samples the RSS of the
server's process tree every second; stops the server. Loopback only: the host is fixed at 127.0.0.1
and nothing else is contacted. Every run is bounded in requests and time, then exits by itself.

The in-process figure: `ulmfit.load(DIR).predict_proba` on --bulk-texts texts at once, in a
subprocess with the same thread count as the 1-worker server. With --make-model DIR, DIR gets an
untrained classifier of the shipped model's size (AWD-LSTM 128/256/3, the tweets' vocabulary): the
cost of prediction does not depend on the weights' values. Writes benchmarks/results/loadtest.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, machine_info, table, write_json  # noqa: E402

HOST = "127.0.0.1"  # loopback only, by design


def load_texts(path: str | None) -> list[str]:
    if path:
        return [str(t) for t in json.loads(Path(path).read_text())]
    from ulmfit.data.fetch import fetch_tweets
    from ulmfit.data.readers import read_table

    return read_table(fetch_tweets()["train"], "text", "label").texts


def make_model(folder: Path, texts: list[str]) -> None:
    import torch

    from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
    from ulmfit.recipes import model_dir
    from ulmfit.recipes.config import ClassifierTrainConfig
    from ulmfit.recipes.ulmfit import classifier_from_lm
    from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
    from ulmfit.text.vocab import Vocab

    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig())
    vocab = Vocab.build(tok.tokenize_many(texts), min_freq=3, max_vocab=30000)
    cfg = AWDLSTMConfig.preset("small", vocab_size=len(vocab))
    model, enc, head = classifier_from_lm(LanguageModel(cfg), cfg, 3, ClassifierTrainConfig())
    folder.mkdir(parents=True, exist_ok=True)
    model_dir.save_text_pipeline(folder, tok.config, vocab)
    model_dir.save_classifier(folder, model, enc, head)
    model_dir.write_marker(folder, "classifier", classes=["negative", "neutral", "positive"], recipe="ulmfit",
                           metric="macro_f1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its descendants (the uvicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        todo += children.get(q, [])
        try:
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def start_server(a, workers: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "ulmfit.cli", "serve", str(a.model), "--host", HOST, "--port", str(port),
           "--workers", str(workers), "--runtime", a.runtime, "--log-level", "warning"]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, proc: subprocess.Popen, workers: int, timeout: float = 180) -> None:
    """Until /ready answers 200 from `workers` distinct worker processes (or timeout)."""
    import httpx

    pids, t0 = set(), time.time()
    while len(pids) < workers:
        if proc.poll() is not None:
            raise SystemExit(f"server exited (rc {proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.time() - t0 > timeout:
            raise SystemExit(f"server not ready after {timeout:.0f} s ({len(pids)} of {workers} workers)")
        try:
            with httpx.Client(timeout=2) as c:  # a new connection each time reaches any worker
                r = c.get(url + "/ready")
                if r.status_code == 200:
                    pids.add(r.json()["pid"])
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


async def load(url: str, texts: list[str], a, duration: float) -> dict:
    import httpx

    lat: list[float] = []
    statuses: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + duration
    rng = random.Random(0)

    async def client(c: httpx.AsyncClient):
        nonlocal sent
        while time.perf_counter() < deadline and sent < a.max_requests:
            sent += 1
            body = {"texts": rng.sample(texts, a.texts_per_request)}
            t0 = time.perf_counter()
            try:
                r = await c.post("/predict", json=body)
                key = str(r.status_code)
                if r.status_code == 200 and len(r.json()["predictions"]) != a.texts_per_request:
                    key = "wrong_count"
            except httpx.HTTPError as e:
                key = type(e).__name__
            lat.append(time.perf_counter() - t0)
            statuses[key] = statuses.get(key, 0) + 1

    limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        await asyncio.gather(*[client(c) for _ in range(a.concurrency)])
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    ok = statuses.get("200", 0)
    return {"requests": len(lat), "ok": ok, "errors": len(lat) - ok, "statuses": statuses, "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 1), "texts_per_s": round(ok * a.texts_per_request / wall, 1),
            "p50_ms": round(1000 * q[49], 2), "p95_ms": round(1000 * q[94], 2), "p99_ms": round(1000 * q[98], 2)}


def sample_rss(pid: int, samples: list, stop: list) -> None:
    while not stop:
        samples.append((round(time.time(), 1), round(tree_rss_mb(pid), 1)))
        time.sleep(1.0)


def run_workers(a, workers: int, texts: list[str]) -> dict:
    import threading

    port = free_port()
    url = f"http://{HOST}:{port}"
    proc = start_server(a, workers, port)
    try:
        t0 = time.time()
        wait_ready(url, proc, workers)
        ready_s = time.time() - t0
        if a.warmup:  # allocator pools and per-shape caches fill here, not in the measured minute
            asyncio.run(asyncio.wait_for(load(url, texts, a, a.warmup), a.warmup + 60))
        samples: list = []
        stop: list = []
        th = threading.Thread(target=sample_rss, args=(proc.pid, samples, stop), daemon=True)
        th.start()
        res = asyncio.run(asyncio.wait_for(load(url, texts, a, a.duration), a.duration + 120))
        stop.append(1)
        th.join()
        import httpx

        metrics = httpx.get(url + "/metrics", timeout=5).text
        alive = httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    rss = [r for _, r in samples]
    k = max(1, len(rss) // 6)  # first and last sixth of the run (10 s of a minute)
    first, last = statistics.mean(rss[:k]), statistics.mean(rss[-k:])
    batch = [l for l in metrics.splitlines() if l.startswith(("ulmfit_batch_size_sum", "ulmfit_batch_size_count"))]
    vals = [float(l.split()[-1]) for l in batch]
    return {**res, "workers": workers, "ready_s": round(ready_s, 1), "alive_after": alive,
            "rss_mb_first": round(first, 1), "rss_mb_last": round(last, 1), "rss_mb_max": round(max(rss), 1),
            "rss_growth_pct": round(100 * (last - first) / first, 2), "rss_samples": samples,
            "rss_slope_mb_per_min_second_half": rss_slope(samples[len(samples) // 2:]),
            "mean_batch_one_worker": round(vals[0] / vals[1], 1) if len(vals) == 2 and vals[1] else None}


def rss_slope(samples: list) -> float | None:
    """Least-squares slope of RSS over time, MB per minute, of (time, MB) samples: the second half of a
    run tells growth from warm-up (allocator pools and kernel caches filling in the first seconds)."""
    if len(samples) < 3:
        return None
    t = [x - samples[0][0] for x, _ in samples]
    y = [r for _, r in samples]
    tm, ym = statistics.mean(t), statistics.mean(y)
    var = sum((x - tm) ** 2 for x in t)
    return round(60 * sum((x - tm) * (r - ym) for x, r in zip(t, y)) / var, 2) if var else None


def bulk_in_process(a, texts: list[str]) -> dict:
    """`ulmfit.load(DIR).predict_proba` on --bulk-texts texts, in a fresh process with the server's threads."""
    threads = a.threads or max(1, (os.cpu_count() or 1))
    code = (f"import json,time,torch,sys; torch.set_num_threads({threads}); import ulmfit.recipes.predictor as P;"
            f"t=json.load(sys.stdin); m=P.load({str(a.model)!r}); m.predict_proba(t[:200]); t0=time.perf_counter();"
            f"m.predict_proba(t); print(json.dumps({{'texts': len(t), 'texts_per_s': len(t)/(time.perf_counter()-t0)}}))")
    code = code.replace("P.load(" + repr(str(a.model)), "P.load(" + repr(str(a.model)) + f", {a.runtime!r}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts[: a.bulk_texts]), capture_output=True,
                         text=True, env=env, timeout=600)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    r = json.loads(out.stdout)
    return {"texts": r["texts"], "texts_per_s": round(r["texts_per_s"], 1), "threads": threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="a classifier model folder")
    g.add_argument("--make-model", help="build an untrained shipped-size classifier here first, and use it")
    p.add_argument("--workers", default="1,2", help="comma list of worker counts, one run each")
    p.add_argument("--duration", type=float, default=60, help="seconds of load per run (bounded)")
    p.add_argument("--warmup", type=float, default=10, help="seconds of load before the measured run (not counted)")
    p.add_argument("--max-requests", type=int, default=200_000, help="requests per run at most (bounded)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="threads per worker (default: the server's, cores // workers)")
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    p.add_argument("--bulk-texts", type=int, default=3000, help="texts for the in-process bulk figure")
    p.add_argument("--texts", help="a JSON list of texts (default: the tweets train split)")
    p.add_argument("--json", default=str(RESULTS / "loadtest.json"))
    a = p.parse_args()
    if a.duration > 600 or a.warmup > 120 or a.max_requests > 10**6 or a.concurrency > 512:
        raise SystemExit("bounded by design: --duration <= 600, --max-requests <= 1e6, --concurrency <= 512")
    texts = load_texts(a.texts)
    if a.make_model:
        a.model = a.make_model
        make_model(Path(a.model), texts)
    info = {"machine": machine_info(), "settings": {k: v for k, v in vars(a).items()}}
    print(f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, load average "
          f"{info['machine']['load_avg_at_start']}", flush=True)
    bulk = bulk_in_process(a, texts)
    print(f"in-process bulk: {bulk['texts_per_s']:,.0f} texts/s ({bulk['texts']} texts, {bulk['threads']} threads)",
          flush=True)
    runs = []
    for w in [int(x) for x in a.workers.split(",")]:
        print(f"{w} worker(s): {a.concurrency} clients x {a.texts_per_request} text(s)/request for {a.duration:.0f} s ...",
              flush=True)
        runs.append(run_workers(a, w, texts))
        r = runs[-1]
        print(f"  {r['requests']} requests, {r['errors']} errors, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
              f"{r['texts_per_s']:.0f} texts/s, RSS {r['rss_mb_first']:.0f} -> {r['rss_mb_last']:.0f} MB", flush=True)
    rows = [{"workers": r["workers"], "requests": r["requests"], "errors": r["errors"], "req/s": r["requests_per_s"],
             "texts/s": r["texts_per_s"], "vs bulk": f"{r['texts_per_s'] / bulk['texts_per_s']:.2f}x",
             "p50 ms": r["p50_ms"], "p95 ms": r["p95_ms"], "p99 ms": r["p99_ms"],
             "RSS MB first->last (max)": f"{r['rss_mb_first']:.0f} -> {r['rss_mb_last']:.0f} ({r['rss_mb_max']:.0f})",
             "RSS MB/min, 2nd half": r["rss_slope_mb_per_min_second_half"],
             "mean batch": r["mean_batch_one_worker"]} for r in runs]
    print()
    print(table(rows, list(rows[0])))
    write_json(Path(a.json), {**info, "bulk_in_process": bulk, "runs": runs})
    print(f"\nwritten: {a.json}")


if __name__ == "__main__":
    main()
