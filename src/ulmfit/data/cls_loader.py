"""Classifier batches: right-padded documents, grouped by length so little time goes into padding.

Training (shuffle=True) uses sortish sampling, as fastai's SortishSampler: a random permutation,
cut into chunks of bs*50 documents, each chunk sorted by length and cut into batches, the batches
shuffled, except that the batch holding the longest document goes first so memory peaks at once
(an out-of-memory error shows up in the first step, not an hour in). With `min_batches`, a training
epoch repeats the data (each pass reshuffled) until it has at least that many batches: 500 labelled
texts are 8 batches of 64, too few steps for a stage of gradual unfreezing. Inference (shuffle=False)
sorts all documents by length; `ClsBatch.index` puts predictions back in the original order; with
`max_batch_pieces` an inference batch also holds at most that many padded tokens (documents x the
longest), so a batch of long documents holds fewer of them (a document longer than that: alone).
`shard(r, n)` (data-parallel training, `train/distributed.py`): process r of n gets rows r, r+n, ...
of every batch of the same plan, so the n shares of a batch are disjoint and of near-equal length.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from ulmfit.errors import UlmfitError
from ulmfit.text.token_docs import TokenDocs

SORTISH_CHUNK = 50  # batches per sorted chunk


@dataclass
class ClsBatch:
    ids: torch.Tensor  # int64 [B, T], right-padded with pad_idx, rows sorted by length descending
    lengths: torch.Tensor  # int64 [B]
    labels: torch.Tensor | None  # int64 [B]
    index: torch.Tensor  # int64 [B]: row b is document index[b] of the loader's docs

    def to(self, device) -> "ClsBatch":
        """The batch with the model's inputs and labels on `device` (train/device.py); `index` stays on
        the CPU, where it addresses host arrays (the loader's rows, a teacher's soft targets)."""
        return replace(self, ids=self.ids.to(device, non_blocking=True), lengths=self.lengths.to(device),
                       labels=None if self.labels is None else self.labels.to(device, non_blocking=True))


class ClassificationLoader:
    def __init__(self, docs: TokenDocs, labels: np.ndarray | None = None, bs: int = 64, shuffle: bool = True,
                 seed: int = 0, pad_idx: int = 1, max_tokens: int | None = None, min_batches: int = 0,
                 max_batch_pieces: int | None = None):
        if bs < 1:
            raise ValueError(f"bs must be positive, got {bs}")
        if max_batch_pieces is not None and (max_batch_pieces < 1 or shuffle):
            raise ValueError(f"max_batch_pieces bounds inference batches (shuffle=False) and must be positive, "
                             f"got {max_batch_pieces} with shuffle={shuffle}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (len(docs),):
                raise ValueError(f"labels has shape {labels.shape}, expected ({len(docs)},)")
        self.docs, self.labels, self.bs = docs, labels, bs
        self.shuffle, self.seed, self.pad_idx, self.max_tokens = shuffle, seed, pad_idx, max_tokens
        self.min_batches, self.max_batch_pieces = min_batches, max_batch_pieces
        lengths = docs.lengths
        self.lengths = np.minimum(lengths, max_tokens) if max_tokens is not None else lengths
        self.epoch = 0
        self.rank, self.world = 0, 1  # this loader yields rows rank::world of every batch

    def shard(self, rank: int, world: int, training: bool = True) -> "ClassificationLoader":
        """Process `rank` of `world`: a disjoint share of every batch (batches of the unsharded plan)."""
        if self.bs < world:
            raise UlmfitError(f"a classifier batch of {self.bs} documents cannot be split over {world} processes; "
                              f"use a batch size (clf.bs) of at least {world}")
        out = copy.copy(self)
        out.rank, out.world = rank, world
        return out

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration uses (only matters with shuffle=True)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self._per_pass() * self._passes()

    def _per_pass(self) -> int:
        if self.max_batch_pieces is not None:
            return len(self.batches())
        return math.ceil(len(self.docs) / self.bs) - int(self._merge_last())

    def _passes(self) -> int:
        per_pass = self._per_pass()
        return max(1, math.ceil(self.min_batches / per_pass)) if self.shuffle and per_pass else 1

    def _merge_last(self) -> bool:
        """Training batches never hold a single document: BatchNorm in the head cannot train on one.
        Sharded over `world` processes, a last batch with fewer documents than processes is merged too."""
        n = len(self.docs)
        return self.shuffle and n > 1 and self.bs > 1 and 0 < n % self.bs < max(2, self.world)

    def batches(self) -> list[np.ndarray]:
        """Document indices of every batch this epoch, each sorted by length descending."""
        n, bs = len(self.docs), self.bs
        if n == 0:
            return []
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            if self.max_batch_pieces is None:
                return [order[i:i + bs] for i in range(0, n, bs)]
            return self._budget_batches(order)
        return [b for k in range(self._passes()) for b in self._sortish_pass(k)]

    def _budget_batches(self, order: np.ndarray) -> list[np.ndarray]:
        """`order` (longest first) cut into batches of at most bs documents and `max_batch_pieces`
        padded tokens: each batch's first document is its longest, so it sets the batch's size."""
        out, i = [], 0
        while i < len(order):
            size = min(self.bs, max(1, self.max_batch_pieces // max(int(self.lengths[order[i]]), 1)))
            out.append(order[i:i + size])
            i += size
        return out

    def _sortish_pass(self, k: int) -> list[np.ndarray]:
        n, bs = len(self.docs), self.bs
        rng = np.random.default_rng([self.seed, self.epoch] + ([k] if k else []))
        perm = rng.permutation(n)
        chunk = bs * SORTISH_CHUNK
        perm = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")]
                               for c in (perm[i:i + chunk] for i in range(0, n, chunk))])
        batches = [perm[i:i + bs] for i in range(0, n, bs)]
        if self._merge_last():
            batches[-2:] = [np.concatenate(batches[-2:])]
        first = int(np.argmax([self.lengths[b[0]] for b in batches]))  # b[0] is each batch's longest
        rest = [batches[i] for i in rng.permutation(len(batches)) if i != first]
        return [batches[first]] + rest

    def __iter__(self) -> Iterator[ClsBatch]:
        for idx in self.batches():
            yield self.collate(idx[self.rank::self.world])

    def collate(self, idx: np.ndarray) -> ClsBatch:
        """Pad the documents at `idx` (re-sorted by length descending) into one batch."""
        idx = idx[np.argsort(-self.lengths[idx], kind="stable")]
        lengths = self.lengths[idx]
        ids = np.full((len(idx), max(int(lengths.max()), 1)), self.pad_idx, dtype=np.int64)
        starts = self.docs.offsets[idx]
        for r, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
            ids[r, :n] = self.docs.ids[s:s + n]  # the first max_tokens tokens
        labels = torch.from_numpy(self.labels[idx]) if self.labels is not None else None
        return ClsBatch(torch.from_numpy(ids), torch.from_numpy(lengths.astype(np.int64)), labels,
                        torch.from_numpy(idx.astype(np.int64)))
