"""Token <-> id mapping. Ids 0..8 are always `SPECIAL_TOKENS` (xxunk=0, xxpad=1, xxbos=2, ...)."""
from __future__ import annotations

import json
import os
from collections import Counter
from itertools import chain, repeat
from pathlib import Path
from typing import Collection, Iterable, Sequence

import numpy as np

from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json
from ulmfit.text.token_docs import TokenDocs
from ulmfit.text.tokenize import SPECIAL_TOKENS, UNK_ID

FORMAT, VERSION = "ulmfit-vocab", 1


class Vocab:
    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if not all(isinstance(s, str) for s in itos):
            raise UlmfitError("vocab tokens must all be strings")
        if itos[:len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise UlmfitError(f"vocab must start with the special tokens {SPECIAL_TOKENS}, "
                              f"got {itos[:len(SPECIAL_TOKENS)]}")
        self.itos = itos
        self.stoi = {s: i for i, s in enumerate(itos)}
        if len(self.stoi) != len(itos):
            dup = next(s for s, n in Counter(itos).items() if n > 1)
            raise UlmfitError(f"vocab has the token {dup!r} more than once")

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 3, max_vocab: int = 60000,
              known: Collection[str] = (), known_min_freq: int | None = None) -> "Vocab":
        """Special tokens, then tokens seen at least `min_freq` times by descending count (ties
        alphabetical, so the result is deterministic), at most `max_vocab` entries in all. Tokens in
        `known` (a pretrained LM's words) are kept from `known_min_freq` occurrences instead (None:
        `min_freq`, like every other token): their rows start from the pretrained embeddings, not
        from the mean of them, so a word the text uses once or twice still starts with a meaning.

        The size is padded up to a multiple of 8 with unused `xxfake0`, `xxfake1`, ... tokens, as
        fastai does: embedding and softmax matrices with a multiple-of-8 dimension multiply faster.
        The padded size never exceeds `max_vocab` (real tokens are dropped to make room instead).
        """
        counts = Counter()
        for toks in token_lists:
            counts.update(toks)
        return cls.from_counts(counts, min_freq, max_vocab, known, known_min_freq)

    @classmethod
    def from_counts(cls, counts: Counter, min_freq: int = 3, max_vocab: int = 60000,
                    known: Collection[str] = (), known_min_freq: int | None = None) -> "Vocab":
        """The rule of `build` on token counts gathered elsewhere (`ulmfit pretrain` counts a corpus
        in a streaming pass). The one place the vocabulary rule lives."""
        if max_vocab < 16:
            raise UlmfitError(f"max_vocab must be at least 16 (9 special tokens, padded to 8), got {max_vocab}")
        counts = Counter(counts)
        for s in SPECIAL_TOKENS:
            counts.pop(s, None)
        known = frozenset(known) if known_min_freq is not None else frozenset()
        words = sorted((w for w, c in counts.items() if c >= min_freq or (w in known and c >= known_min_freq)),
                       key=lambda w: (-counts[w], w))
        n = min(len(SPECIAL_TOKENS) + len(words), max_vocab)
        if -(-n // 8) * 8 > max_vocab:
            n = max_vocab // 8 * 8
        itos = SPECIAL_TOKENS + words[:n - len(SPECIAL_TOKENS)]
        taken = set(itos)
        fakes = (f"xxfake{i}" for i in range(len(itos) + 8) if f"xxfake{i}" not in taken)
        itos += [next(fakes) for _ in range(-len(itos) % 8)]
        return cls(itos)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {' '.join(self.itos[9:19])} ...)"

    def numericalize(self, tokens: Sequence[str]) -> np.ndarray:
        """int32 ids; unknown tokens -> UNK_ID (0)."""
        return np.fromiter(map(self.stoi.get, tokens, repeat(UNK_ID)), dtype=np.int32, count=len(tokens))

    def encode_many(self, token_lists: Iterable[Sequence[str]]) -> TokenDocs:
        """All documents into one flat id array in a single pass: `map(stoi.get, ...)` runs in C
        and `np.fromiter` fills the array without an intermediate list of ints."""
        docs = token_lists if isinstance(token_lists, Sequence) else list(token_lists)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(map(self.stoi.get, chain.from_iterable(docs), repeat(UNK_ID)),
                          dtype=np.int32, count=int(offsets[-1]))
        return TokenDocs(ids, offsets)

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        itos = self.itos
        return [itos[i] for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()]

    def save(self, path: str | os.PathLike) -> None:
        """JSON, written atomically (ulmfit.fileio), so a crash never leaves half a vocab."""
        atomic_write_json(path, {"format": FORMAT, "version": VERSION, "itos": self.itos}, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        path = Path(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise UlmfitError(f"vocab file {path} not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UlmfitError(f"{path} is not a JSON vocab file ({e}); was it written by Vocab.save?") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("itos"), list):
            raise UlmfitError(f"{path} is not a ulmfit vocab (expected a JSON object with "
                              f'"format": "{FORMAT}" and an "itos" list)')
        if data.get("version") != VERSION:
            raise UlmfitError(f"{path} is a ulmfit vocab of version {data.get('version')!r}; this ulmfit "
                              f"reads version {VERSION} (upgrade ulmfit)")
        try:
            return cls(data["itos"])
        except UlmfitError as e:
            raise UlmfitError(f"{path}: {e}") from None
