"""Cross-validated selection for small label sets (issue 21): the fold loop that the recipes which
offer it share (the ULMFiT classifier: recipes/ulmfit.py; SiATL: recipes/siatl.py).

The arithmetic (the switch, the folds, the epoch, the spread) is train/crossval.py. Here: the
pooled labelled rows are split into stratified folds; each fold trains through the recipe's own
`fit_fold` (its phase function, hence train/loop.py `run_phase`: no second loop) with its own
checkpoint prefix `cv{f}` and log `cv_history.jsonl`, every epoch's held-out probabilities in its
history; a finished fold is saved as checkpoints/cv-fold{f}.json and not trained again on resume.
Then the epoch maximising the mean of the folds' curves, the recipe's `refit(epoch)` on all rows
(keeping that epoch's weights, `LoopConfig.select_epoch`), and `cv.json`: the curves, the per-fold
figures and their spread, and the out-of-fold probabilities at the chosen epoch, on which
recipes/posthoc.py `finish` fits the temperature and the decision rule.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ulmfit.fileio import atomic_write_json, remove
from ulmfit.recipes.posthoc import CV_FILE
from ulmfit.train.crossval import choose_epoch, n_folds, spread, stratified_folds
from ulmfit.train.loop import PhaseFiles, PhaseResult
from ulmfit.train.metrics import better, classification_metrics

# fit_fold(fold, training rows, held-out rows, the fold's files) -> the fold's PhaseResult, trained
# without early stopping; each history record holds the metric and "probs" (the held-out rows'
# probabilities, in the order of the held-out rows)
FitFold = Callable[[int, np.ndarray, np.ndarray, PhaseFiles], PhaseResult]
Refit = Callable[[int], None]  # refit(global epoch number): train on all rows, keep that epoch, save the model


def fold_files(out: Path, fold: int) -> PhaseFiles:
    return PhaseFiles(out, f"cv{fold}", log_name="cv_history.jsonl")


def cross_validate(out: Path, labels: np.ndarray, classes: list[str], *, folds: int, seed: int, metric: str,
                   fit_fold: FitFold, refit: Refit, resume: bool, log: Callable[[str], None], what: str,
                   pooled: tuple[int, int], switch: str) -> dict:
    """Cross-validated selection of the epoch over `labels` (every labelled row the run has), then
    the refit; writes `out/cv.json` and returns the out-of-fold metrics (argmax). `pooled`: (training,
    validation) rows in `labels`; `what`: the model, for the log; `switch`: the config field that
    turns it off, for the log."""
    labels = np.asarray(labels, dtype=np.int64)
    k = n_folds(labels, folds)
    fold = stratified_folds(labels, k, seed)
    log(f"{what}, cross-validated selection: {len(labels):,} labelled rows (training {pooled[0]:,} + validation "
        f"{pooled[1]:,} pooled), {k} stratified folds; the epoch is chosen on the mean of the folds' validation "
        f"{metric}, then one refit on all rows (off: --set {switch}=off)")
    records = []
    for f in range(k):
        done = out / "checkpoints" / f"cv-fold{f}.json"
        if resume and done.exists():
            records.append(json.loads(done.read_text()))
            continue
        tr, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        files = fold_files(out, f)
        history = fit_fold(f, tr, held, files).history
        rec = {"fold": f, "rows": held.tolist(), "curve": [r[metric] for r in history],
               "epochs": [r["epoch"] for r in history], "stages": [r["stage"] for r in history],
               "probs": [r["probs"] for r in history]}
        atomic_write_json(done, rec)
        remove(files.checkpoint)  # the record holds what is needed: free the fold's weights
        remove(files.best)
        records.append(rec)
        log(f"fold {f + 1}/{k}: {len(tr)} training / {len(held)} held-out rows; {metric} by epoch "
            + " ".join(f"{v:.3f}" for v in rec["curve"]))
    mode = better(metric)
    pick, mean = choose_epoch([r["curve"] for r in records], mode)
    epoch, stage = records[0]["epochs"][pick], records[0]["stages"][pick]
    oof = np.zeros((len(labels), len(classes)), dtype=np.float64)
    for r in records:
        oof[r["rows"]] = np.asarray(r["probs"][pick], dtype=np.float64)
    at = spread([r["curve"][pick] for r in records])
    log(f"cross-validated selection: epoch {epoch} ({stage}; {pick + 1} of {len(mean)}); mean {metric} by epoch "
        + " ".join(f"{v:.3f}" for v in mean)
        + f"; at epoch {epoch} over the {k} folds: mean {at['mean']:.4f}, sd {at['sd']:.4f}, min {at['min']:.4f}, "
          f"max {at['max']:.4f}")
    refit(epoch)
    metrics = classification_metrics(labels, oof.argmax(1), classes)
    best = [r["epochs"][int(np.argmax(r["curve"]) if mode == "max" else np.argmin(r["curve"]))] for r in records]
    atomic_write_json(out / CV_FILE, {
        "format": 1, "switch": switch, "folds": k, "metric": metric, "epoch": epoch, "stage": stage, "epochs": records[0]["epochs"],
        "rows": len(labels), "from_training": pooled[0], "from_validation": pooled[1],
        "mean_curve": mean.tolist(), "fold_curves": [r["curve"] for r in records], "at_epoch": at,
        "fold_best_epochs": best, "out_of_fold": {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
        "labels": labels.tolist(), "fold": fold.tolist(), "oof_probs": oof.tolist()})
    log(f"{what} refit on all {len(labels):,} rows up to epoch {epoch}; out-of-fold accuracy "
        f"{metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    return metrics
