"""Prometheus text exposition (format 0.0.4) of the server's counters and histograms, written by hand:
a few counters and two histograms do not need the prometheus_client dependency.

Figures are per worker process (label `pid`): with `--workers N` each scrape reaches one worker;
scrape them separately or sum over `pid` in the query.
"""
from __future__ import annotations

import bisect
import os
import threading
from collections import defaultdict

# Request latency buckets (seconds): 1 ms .. 10 s. Batch-size buckets (texts per model call).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.buckets, v)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, cum = [], 0
        for b, c in zip(self.buckets, self.counts):
            cum += c
            out.append(f'{name}_bucket{{{labels},le="{b:g}"}} {cum}')
        out += [f'{name}_bucket{{{labels},le="+Inf"}} {self.count}', f"{name}_sum{{{labels}}} {self.sum:.6f}",
                f"{name}_count{{{labels}}} {self.count}"]
        return out


class Metrics:
    """Counters: requests by path and status, texts predicted; histograms: /predict latency, batch sizes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.texts = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)

    def request(self, path: str, status: int, seconds: float | None = None) -> None:
        with self.lock:
            self.requests[(path, status)] += 1
            if seconds is not None:
                self.latency.observe(seconds)

    def model_call(self, n_texts: int, seconds: float) -> None:
        with self.lock:
            self.texts += n_texts
            self.batch.observe(n_texts)
            self.batch_seconds.observe(seconds)

    def render(self, queue_depth: int, ready: bool) -> str:
        pid = f'pid="{os.getpid()}"'
        with self.lock:
            lines = ["# HELP ulmfit_requests_total HTTP requests by path and status code.",
                     "# TYPE ulmfit_requests_total counter"]
            lines += [f'ulmfit_requests_total{{{pid},path="{p}",status="{s}"}} {n}'
                      for (p, s), n in sorted(self.requests.items())]
            errors = sum(n for (_, s), n in self.requests.items() if s >= 400)
            lines += ["# HELP ulmfit_request_errors_total Requests answered with a 4xx or 5xx status.",
                      "# TYPE ulmfit_request_errors_total counter", f"ulmfit_request_errors_total{{{pid}}} {errors}",
                      "# HELP ulmfit_texts_predicted_total Texts through the model.",
                      "# TYPE ulmfit_texts_predicted_total counter", f"ulmfit_texts_predicted_total{{{pid}}} {self.texts}",
                      "# HELP ulmfit_predict_latency_seconds /predict latency, arrival to answer.",
                      "# TYPE ulmfit_predict_latency_seconds histogram",
                      *self.latency.lines("ulmfit_predict_latency_seconds", pid),
                      "# HELP ulmfit_batch_size Texts per model call (dynamic batching).",
                      "# TYPE ulmfit_batch_size histogram", *self.batch.lines("ulmfit_batch_size", pid),
                      "# HELP ulmfit_batch_seconds Seconds per model call.",
                      "# TYPE ulmfit_batch_seconds histogram", *self.batch_seconds.lines("ulmfit_batch_seconds", pid),
                      "# HELP ulmfit_queue_depth Requests waiting for the model.", "# TYPE ulmfit_queue_depth gauge",
                      f"ulmfit_queue_depth{{{pid}}} {queue_depth}",
                      "# HELP ulmfit_ready 1 when the model is loaded.", "# TYPE ulmfit_ready gauge",
                      f"ulmfit_ready{{{pid}}} {int(ready)}"]
        return "\n".join(lines) + "\n"
