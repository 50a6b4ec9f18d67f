"""TF-IDF (word 1-2 grams) + logistic regression, C chosen on the validation split: our
`ulmfit.recipes.baselines.tfidf_logreg`, run in our own venv:

    .venv/bin/python benchmarks/peers/tfidf.py JOB.json RESULT.json

JOB: {"train", "valid", "test", "seed", "params": {"Cs": [...], "class_weight": null or "balanced"}}.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import peer_main, read_csv_rows  # noqa: E402


def run(job):
    from ulmfit.recipes.baselines import tfidf_logreg

    (xt, yt), (xv, yv), (xs, _) = (read_csv_rows(job[k]) for k in ("train", "valid", "test"))
    t0 = time.perf_counter()
    kw = {"Cs": tuple(job["params"]["Cs"])} if job.get("params", {}).get("Cs") else {}
    if job.get("params", {}).get("class_weight"):  # "balanced": sklearn's inverse-frequency weights
        kw["class_weight"] = job["params"]["class_weight"]
    predict, info = tfidf_logreg(xt, yt, xv, yv, seed=job["seed"], **kw)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = [str(x) for x in predict(xs)]
    return {"test_pred": pred, "train_s": round(train_s, 2), "predict_s": round(time.perf_counter() - t1, 2),
            "details": info}


if __name__ == "__main__":
    peer_main(run)
