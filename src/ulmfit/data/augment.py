"""More texts for distillation: perturbed copies of the transfer set (Tang et al. 2019, section 3.3).

A student learns the teacher's function only where it sees the teacher answer. With all labels and no
unlabelled text the transfer set is the training set itself; Tang et al. ("Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks", arXiv:1903.12136) grow it with perturbed copies of each
text, labelled by the teacher's probabilities alone. Their rules, applied to the words of a text:

- each word, with probability `p_mask`, is masked; else, with probability `p_replace`, replaced by another
  word (theirs: one of the same part of speech, drawn from that tag's unigram distribution);
- then, with probability `p_ngram`, the copy is cut to one of its n-grams, n uniform in 1..`max_n`.

Two departures, both because the teacher and the student here do not share a vocabulary: a masked word is
DROPPED rather than written as a mask token (the teacher's [MASK] is a word piece the AWD-LSTM does not
have, and its xxunk is three word pieces to MiniLM; a dropped word is the same text to both), and the
replacement word is drawn from the unigram distribution of the transfer set's own words (no
part-of-speech tagger ships here). Their probabilities (0.1 / 0.1 / 0.25, n up to 5) are the defaults.
Copies equal to their source or to an earlier copy of it, and empty copies, are left out.

Words are whitespace-separated tokens; the texts' own tokenizers see the copies as ordinary text.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

P_MASK = 0.1  # Tang et al. 2019, section 4.2: p_mask = p_pos = 0.1, p_ng = 0.25
P_REPLACE = 0.1
P_NGRAM = 0.25
MAX_N = 5  # n-gram lengths 1..5 (Tang et al.)


def augment(texts: Sequence[str], copies: int, seed: int, *, p_mask: float = P_MASK, p_replace: float = P_REPLACE,
            p_ngram: float = P_NGRAM, max_n: int = MAX_N) -> tuple[list[str], np.ndarray]:
    """Up to `copies` perturbed copies of each text: (the copies, the index of each copy's source text).
    Deterministic in `seed`; the same texts and seed give the same copies on every machine."""
    if copies < 0 or not 0 <= p_mask + p_replace <= 1 or not 0 <= p_ngram <= 1 or max_n < 1:
        raise ValueError("augment: copies >= 0, 0 <= p_mask + p_replace <= 1, 0 <= p_ngram <= 1, max_n >= 1")
    words = [str(t).split() for t in texts]
    pool = [w for ws in words for w in ws]  # the unigram distribution: a uniform draw from every word occurrence
    out, source = [], []
    if copies == 0 or not pool:
        return out, np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, 1903])
    for i, ws in enumerate(words):
        if not ws:
            continue
        seen = {" ".join(ws)}
        for _ in range(copies):
            x = rng.random(len(ws))
            picks = rng.integers(0, len(pool), len(ws))
            new = [pool[p] if u < p_mask + p_replace else w for w, p, u in zip(ws, picks, x) if u >= p_mask]
            if new and rng.random() < p_ngram:
                n = min(int(rng.integers(1, max_n + 1)), len(new))
                start = int(rng.integers(0, len(new) - n + 1))
                new = new[start:start + n]
            text = " ".join(new)
            if text and text not in seen:
                seen.add(text)
                out.append(text)
                source.append(i)
    return out, np.asarray(source, np.int64)
