"""Low-resource mode: a stratified, seeded sample of the labelled training rows.

ULMFiT's claim is that a classifier needs few labels once the language model knows the domain;
`ulmfit fit --labels-per-class N` / `--max-labels N` measures that on a data set that has more
labels than that: the sampled rows are the labelled training set, the others are used as
unlabelled text for the language model.
"""
from __future__ import annotations

import numpy as np

from ulmfit.errors import UlmfitError


def stratified_subset(labels: np.ndarray, *, per_class: int | None = None, total: int | None = None,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept indices, rest indices), both sorted.

    `per_class`: that many rows of every class (a smaller class is kept whole).
    `total`: exactly `total` rows, split over the classes in proportion to their frequencies
    (largest-remainder rounding) with at least one row per class.
    The same labels and seed always give the same sample; another seed gives another one.
    """
    labels = np.asarray(labels)
    if per_class is not None and total is not None:
        raise UlmfitError("labels_per_class and max_labels (--labels-per-class / --max-labels) exclude each other; "
                          "set only one")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if per_class is None and total is None:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    if per_class is not None:
        if per_class < 1:
            raise UlmfitError(f"labels_per_class (--labels-per-class) must be at least 1, got {per_class}")
        quota = np.minimum(counts, per_class)
    else:
        quota = _proportional_quota(counts, total)
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(np.flatnonzero(inverse == c))[:q] for c, q in enumerate(quota)]
    kept = np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), kept)
    return kept.astype(np.int64), rest.astype(np.int64)


def _proportional_quota(counts: np.ndarray, total: int) -> np.ndarray:
    """Rows per class: proportional to `counts`, summing to `total`, at least 1, at most the class size."""
    n, k = int(counts.sum()), len(counts)
    if total > n:
        raise UlmfitError(f"max_labels (--max-labels) is {total} but the training data has only {n:,} labelled rows; "
                          f"pass at most {n:,}")
    if total < k:
        raise UlmfitError(f"max_labels (--max-labels) is {total} but there are {k} classes; pass at least {k} "
                          f"(one row per class)")
    exact = total * counts / n
    quota = np.maximum(np.floor(exact).astype(np.int64), 1)
    # Largest remainder: hand out (or take back, after the at-least-one bump) one row at a time to
    # the class furthest below (above) its exact share. Ties go to the first class: deterministic.
    while (diff := total - int(quota.sum())) != 0:
        gap = exact - quota
        if diff > 0:
            c = int(np.argmax(np.where(quota < counts, gap, -np.inf)))
            quota[c] += 1
        else:
            c = int(np.argmin(np.where(quota > 1, gap, np.inf)))
            quota[c] -= 1
    return quota
