"""Numericalised documents as one flat int32 array plus offsets (a ragged array).

Every stage after the tokenizer works on this: no per-token Python objects, one contiguous block
of memory that can be memory-mapped from disk for corpora larger than RAM.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ulmfit.fileio import atomic_write_npy


@dataclass
class TokenDocs:
    """Document i is `ids[offsets[i]:offsets[i+1]]`."""

    ids: np.ndarray  # int32, all documents concatenated
    offsets: np.ndarray  # int64, n_docs + 1 entries, offsets[0] == 0

    def __post_init__(self):
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be 1-D and start at 0")
        if int(self.offsets[-1]) != len(self.ids):
            raise ValueError(f"offsets end at {int(self.offsets[-1])} but there are {len(self.ids)} ids")

    @classmethod
    def from_arrays(cls, arrays: Iterable[Sequence[int] | np.ndarray]) -> "TokenDocs":
        arrays = [np.asarray(a, dtype=np.int32) for a in arrays]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        return cls(ids.astype(np.int32, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def subset(self, index: Sequence[int] | np.ndarray) -> "TokenDocs":
        """A copy holding the documents at `index`, in that order."""
        return TokenDocs.from_arrays([self[int(i)] for i in np.asarray(index)])

    def reversed(self) -> "TokenDocs":
        """Each document's tokens reversed in place of order (for backward models); documents keep their order."""
        lengths = self.lengths
        doc_of_token = np.repeat(np.arange(len(self)), lengths)
        pos = np.arange(self.n_tokens) - self.offsets[doc_of_token]
        src = self.offsets[doc_of_token] + (lengths[doc_of_token] - 1 - pos)
        return TokenDocs(self.ids[src], self.offsets.copy())

    def save(self, folder: str | os.PathLike) -> None:
        """Write `ids.npy` and `offsets.npy` into `folder` (atomically, each via a temp file)."""
        for name, arr in (("ids", self.ids), ("offsets", self.offsets)):
            atomic_write_npy(Path(folder) / f"{name}.npy", arr)

    @classmethod
    def load(cls, folder: str | os.PathLike, mmap: bool = True) -> "TokenDocs":
        folder = Path(folder)
        mode = "r" if mmap else None
        return cls(np.load(folder / "ids.npy", mmap_mode=mode), np.load(folder / "offsets.npy"))
