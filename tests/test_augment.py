"""Perturbed copies for distillation (data/augment.py, Tang et al. 2019 section 3.3)."""
from __future__ import annotations

import numpy as np
import pytest

from ulmfit.data.augment import augment

TEXTS = ["the flight was late again and nobody told us why", "great crew , smooth landing", "ok", "",
         "lost my bag at the gate , third time this year"]


def test_same_seed_same_copies_and_another_seed_others():
    a, sa = augment(TEXTS, 3, seed=0)
    b, sb = augment(TEXTS, 3, seed=0)
    c, _ = augment(TEXTS, 3, seed=1)
    assert a == b and sa.tolist() == sb.tolist() and a != c


def test_copies_are_new_nonempty_and_at_most_copies_per_text():
    out, src = augment(TEXTS, 4, seed=0)
    assert len(out) == len(src) and out
    counts = np.bincount(src, minlength=len(TEXTS))
    assert counts.max() <= 4 and counts[3] == 0  # the empty text has no copies
    pool = {w for t in TEXTS for w in t.split()}
    for text, i in zip(out, src):
        assert text and text != TEXTS[i] and set(text.split()) <= pool
    for i in range(len(TEXTS)):  # no copy twice
        mine = [t for t, j in zip(out, src) if j == i]
        assert len(mine) == len(set(mine))


def test_each_rule_alone():
    words = TEXTS[0].split()
    # drop only: an ordered sub-sequence of the words, shorter than the text
    out, _ = augment([TEXTS[0]], 20, seed=0, p_mask=0.3, p_replace=0, p_ngram=0)
    for t in out:
        it = iter(words)
        assert all(w in it for w in t.split()) and len(t.split()) < len(words)
    # replace only: the same length, some words swapped for words of the pool
    out, src = augment(TEXTS, 20, seed=0, p_mask=0, p_replace=0.3, p_ngram=0)
    assert out and all(len(t.split()) == len(TEXTS[i].split()) for t, i in zip(out, src))
    # n-grams only: contiguous runs of 1..max_n words
    out, _ = augment([TEXTS[0]], 20, seed=0, p_mask=0, p_replace=0, p_ngram=1, max_n=3)
    assert out and all(1 <= len(t.split()) <= 3 and f" {t} " in f" {TEXTS[0]} " for t in out)
    # no rule fires: every copy equals its source, so there are none; all words dropped: none either
    assert augment(TEXTS, 5, seed=0, p_mask=0, p_replace=0, p_ngram=0)[0] == []
    assert augment(TEXTS, 5, seed=0, p_mask=1, p_replace=0, p_ngram=0)[0] == []
    assert augment(TEXTS, 0, seed=0)[0] == [] and augment([], 3, seed=0)[0] == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        augment(TEXTS, -1, seed=0)
    with pytest.raises(ValueError):
        augment(TEXTS, 1, seed=0, p_mask=0.7, p_replace=0.7)


def test_auto_makes_copies_only_when_the_run_has_no_unlabelled_text():
    from ulmfit.recipes.distill_config import AUTO_COPIES, DistillConfig, augment_copies
    from ulmfit.errors import UlmfitError

    assert DistillConfig().augment == "auto"
    assert augment_copies("auto", 0)[0] == AUTO_COPIES == 3
    assert augment_copies("auto", 1)[0] == 0 and augment_copies(0, 0)[0] == 0 and augment_copies(5, 100)[0] == 5
    assert "no unlabelled text" in augment_copies("auto", 0)[1]
    for bad in (-1, "many"):
        with pytest.raises(UlmfitError):
            DistillConfig(augment=bad)
