"""`ulmfit ensemble DIR... --valid V --out DIR`: a weighted average of finished classifiers' class
probabilities (e.g. an AWD-LSTM model and a MiniLM model), weights chosen on a validation file.

Weights: every point of the simplex grid with step 1/`grid` (weights >= 0, summing to 1; 66 points
for 3 members at grid 10) is scored on the validation texts, by macro-F1 of the averaged
probabilities (the selection metric of `ulmfit fit`), ties broken by lower log-loss, then by
closeness to equal weights. Macro-F1 on a small validation split is noisy; log-loss breaks its
frequent ties. With many members the grid grows fast, so `grid` shrinks until it has at most
`MAX_POINTS` points (searched exhaustively: no optimiser, nothing random).

The ensemble folder is a model folder (`ulmfit.load`, `predict`, `evaluate` work on it):
```
OUT/ulmfit.json          marker: kind "ensemble", classes, members [{path, weight, source}]
OUT/members/m0/ ...      a full copy of each member folder (so OUT moves and reloads by itself)
OUT/valid_metrics.json   the ensemble's and each member's validation metrics, the weights
OUT/report.md
```
Members are copied in, not referenced: a model folder that depends on paths outside itself breaks
when either is moved or deleted. The copy costs disk (a MiniLM member is ~90 MB).
"""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ulmfit.data.readers import read_table
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json, atomic_write_text, staging_path, swap_in, write_lock
from ulmfit.recipes import model_dir
from ulmfit.train.metrics import classification_metrics, format_report

MAX_POINTS = 5000  # grid points scored at most (each is one [n, C] weighted sum + macro-F1)
MEMBERS_DIR = "members"


def simplex_grid(k: int, grid: int) -> np.ndarray:
    """All weight vectors of `k` non-negative multiples of 1/grid that sum to 1: [n_points, k]."""
    if k < 1 or grid < 1:
        raise ValueError(f"simplex_grid needs k >= 1 and grid >= 1, got {k}, {grid}")
    points = [np.diff([0, *cuts, grid]) for cuts in itertools.combinations_with_replacement(range(grid + 1), k - 1)]
    return np.array(points, dtype=np.float64) / grid


def grid_for(k: int, grid: int = 10) -> int:
    """The finest step <= 1/grid whose simplex grid for `k` members has at most MAX_POINTS points."""
    from math import comb

    while grid > 1 and comb(grid + k - 1, k - 1) > MAX_POINTS:
        grid -= 1
    return grid


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def choose_weights(probs: Sequence[np.ndarray], y: np.ndarray, classes: list[str], grid: int = 10
                   ) -> tuple[np.ndarray, dict]:
    """The grid point with the best (macro-F1, -log-loss, -distance to equal weights) on (probs, y)."""
    k = len(probs)
    points = simplex_grid(k, grid_for(k, grid))
    equal = np.full(k, 1.0 / k)
    best, best_key = None, None
    for w in points:
        avg = weighted(probs, w)
        f1 = classification_metrics(y, avg.argmax(1), classes)["macro_f1"]
        key = (round(f1, 12), -round(log_loss(avg, y), 12), -float(np.abs(w - equal).sum()))
        if best_key is None or key > best_key:
            best, best_key = w, key
    return best, {"macro_f1": best_key[0], "log_loss": -best_key[1], "points": len(points)}


def weighted(probs: Sequence[np.ndarray], w: Sequence[float]) -> np.ndarray:
    """The members' probabilities averaged with weights `w` by the predictor's rule (`predictor.average`),
    so the weights are chosen, and valid_metrics.json is written, on what the loaded ensemble predicts."""
    from ulmfit.recipes.predictor import average

    return average(dict(enumerate(probs)), dict(enumerate(w)))


def member_probs(model, classes: list[str], texts: list[str]) -> np.ndarray:
    """A member's probabilities with columns in `classes` order."""
    p = model.predict_proba(texts)
    return p[:, [model.classes.index(c) for c in classes]]


def build_ensemble(members: Sequence[str | Path], valid: str | Path, out: str | Path, *, text_col: str = "text",
                   label_col: str = "label", encoding: str = "utf-8", grid: int = 10, overwrite: bool = False,
                   log: Callable[[str], None] = lambda m: None):
    """Choose weights on `valid`, copy the members into `out` and write its marker; returns the loaded ensemble."""
    from ulmfit.recipes.predictor import BUILD_PRECISION, Classifier

    out = Path(out)
    if len(members) < 2:
        raise UlmfitError(f"ensemble: give at least two model folders, got {len(members)}")
    for m in members:
        if Path(m).resolve() == out.resolve() or out.resolve() in Path(m).resolve().parents:
            raise UlmfitError(f"ensemble: --out {out} is (or holds) the member {m}; choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UlmfitError(f"{out} already exists and is not empty; choose another --out, or pass --overwrite")
    models = [Classifier(m, precision=BUILD_PRECISION) for m in members]  # the weights: the same on every CPU
    classes = models[0].classes
    for m, model in zip(members, models):
        if set(model.classes) != set(classes):
            raise UlmfitError(f"ensemble: {m} predicts classes {model.classes} but {members[0]} predicts {classes}; "
                              f"members must share their classes")
    table = read_table(Path(valid), text_col=text_col, label_col=label_col, encoding=encoding)
    unseen = sorted(set(l.strip() for l in table.labels) - set(classes))
    if unseen:
        raise UlmfitError(f"{table.source}: labels {unseen[:5]} are not classes of the members ({classes})")
    y = np.array([classes.index(l.strip()) for l in table.labels], dtype=np.int64)
    probs = []
    for m, model in zip(members, models):
        probs.append(member_probs(model, classes, table.texts))
        f1 = classification_metrics(y, probs[-1].argmax(1), classes)["macro_f1"]
        log(f"member {m}: validation macro-F1 {f1:.4f}, log-loss {log_loss(probs[-1], y):.4f}")
    weights, score = choose_weights(probs, y, classes, grid)
    log(f"weights {', '.join(f'{w:.2f}' for w in weights)} (best of {score['points']} grid points by validation "
        f"macro-F1 {score['macro_f1']:.4f}, log-loss {score['log_loss']:.4f})")

    with write_lock(out):  # built beside `out`, swapped in whole: an old ensemble stays intact until then
        stage = staging_path(out)
        shutil.rmtree(stage, ignore_errors=True)
        _write(stage, members, weights, probs, y, classes, table.source, grid, valid)
        swap_in(stage, out)
    return Classifier(out)


def _write(out: Path, members, weights, probs, y, classes, source: str, grid: int, valid) -> None:
    (out / MEMBERS_DIR).mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (m, w) in enumerate(zip(members, weights)):
        rel = f"{MEMBERS_DIR}/m{i}"
        shutil.copytree(m, out / rel, ignore=shutil.ignore_patterns("checkpoints"))
        entries.append({"path": rel, "weight": float(w), "source": str(Path(m).resolve())})
    avg = weighted(probs, weights)
    metrics = classification_metrics(y, avg.argmax(1), classes)
    metrics["log_loss"] = log_loss(avg, y)
    metrics["weights"] = [float(w) for w in weights]
    metrics["by_member"] = {e["path"]: classification_metrics(y, p.argmax(1), classes) for e, p in zip(entries, probs)}
    atomic_write_json(out / "valid_metrics.json", metrics)
    rows = "\n".join(f"| {e['path']} ({e['source']}) | {e['weight']:.2f} | {metrics['by_member'][e['path']]['macro_f1']:.4f} |"
                     for e in entries)
    atomic_write_text(out / "report.md", (
        f"# ulmfit ensemble report\n\nWeighted average of {len(entries)} classifiers' probabilities; weights chosen "
        f"on {source} ({len(y)} texts) by macro-F1 (ties: log-loss), step 1/{grid_for(len(entries), grid)}.\n\n"
        f"| member | weight | validation macro-F1 |\n|---|---|---|\n{rows}\n| ensemble | | {metrics['macro_f1']:.4f} |\n\n"
        f"```\n{format_report(metrics, classes)}\n```\n"))
    model_dir.write_marker(out, "ensemble", classes=classes, members=entries,
                           metric="macro_f1", valid=str(Path(valid).resolve()))
