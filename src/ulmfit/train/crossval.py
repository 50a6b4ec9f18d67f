"""Cross-validated selection for small label sets (issue 21): pure functions on label arrays and
validation curves (no model, no file).

With few labels per class the validation split is tiny and choosing the epoch on it is noise: a
class with 5 validation examples moves its F1 by ~0.1 per example, more than the differences between
epochs. A recipe that cross-validates (recipes/ulmfit.py `cv_classifier`) pools its labelled rows,
splits them into k stratified folds (`stratified_folds`), trains one classifier per fold through the
one training loop (validating on the held-out fold every epoch, no early stopping, so every fold
has the whole curve), picks the epoch that maximises the mean of the folds' curves (`choose_epoch`),
and refits on all rows for that many epochs. The held-out folds' probabilities at that epoch (out of
fold, every row predicted by a model that did not train on it) are what the temperature and the
decision rule are then fitted on (train/calibration.py `fit_posthoc`), in place of a validation
split. `spread` summarises per-fold figures for the report.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ulmfit.errors import UlmfitError

SETTINGS = ("auto", "on", "off")


def use_cv(setting: str, valid_labels, n_classes: int, below: int) -> bool:
    """The switch: "on" / "off" as given; "auto" is on when some class has fewer than `below`
    examples in the validation split (a class absent from it counts as 0)."""
    if setting not in SETTINGS:
        raise UlmfitError(f"cv={setting!r}: choose one of {', '.join(SETTINGS)}")
    if setting != "auto":
        return setting == "on"
    return smallest_class(valid_labels, n_classes) < below


def smallest_class(labels, n_classes: int) -> int:
    """The count of the rarest class in `labels` (0 when a class is missing)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).min())


def n_folds(labels, k: int) -> int:
    """The folds actually used: `k`, but no more than the rows of the rarest class present (at
    least 2), so that most folds hold an example of every class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    present = counts[counts > 0]
    if len(labels) < 4:
        raise UlmfitError(f"cross-validated selection needs at least 4 labelled rows, got {len(labels)}; "
                          "add labels or switch it off (--set clf.cv=off)")
    return int(max(2, min(k, present.min())))


def stratified_folds(labels, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every row: k disjoint folds covering all rows, each class spread over
    the folds as evenly as its count allows (scikit-learn's StratifiedKFold, shuffled with `seed`)."""
    labels = np.asarray(labels, dtype=np.int64)
    fold = np.full(len(labels), -1, dtype=np.int64)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    # StratifiedKFold warns when a class has fewer rows than folds; n_folds keeps that to absent classes
    for f, (_, held) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        fold[held] = f
    return fold


def choose_epoch(curves: list[list[float]], mode: str = "max") -> tuple[int, np.ndarray]:
    """(the epoch whose mean over the folds' curves is best, that mean curve). `curves`: one list of
    per-epoch validation values per fold, all of the same length; ties go to the earliest epoch
    (fewer epochs: cheaper and less fitted to the few labels)."""
    lengths = {len(c) for c in curves}
    if not curves or len(lengths) != 1 or 0 in lengths:
        raise UlmfitError(f"cross-validated selection: the folds' curves must be non-empty and of one length, "
                          f"got lengths {sorted(len(c) for c in curves)}")
    mean = np.mean(np.asarray(curves, dtype=np.float64), axis=0)
    score = np.where(np.isnan(mean), -np.inf, mean if mode == "max" else -mean)
    return int(np.argmax(score)), mean


def spread(values) -> dict:
    """mean, sd (population), min and max of per-fold figures."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std()), "min": float(v.min()), "max": float(v.max())}
