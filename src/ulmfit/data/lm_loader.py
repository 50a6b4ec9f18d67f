"""Language-model batches: one token stream cut into `bs` contiguous rows, read `bptt` columns at a time.

Each epoch the documents are (optionally) shuffled and conceptually concatenated into a stream of N
tokens. The first `bs * L` tokens, L = (N - 1) // bs, are laid out as `bs` rows of length L (plus
one token of look-ahead for the targets); batch k reads columns [k*bptt, k*bptt + seq) of every
row. Row r of batch k+1 continues exactly where row r of batch k stopped, so a trainer can carry
the LSTM hidden state across batches (truncated BPTT).

`shard(r, n)` gives process r of n (data-parallel training, `train/distributed.py`) the rows
[r*bs/n, (r+1)*bs/n) of that same layout: contiguous streams, never a permutation of rows.

The shuffled stream is never materialised: batches are gathered straight from `docs.ids` (which may
be a read-only np.memmap) through the permuted document order and its cumulative lengths, so memory
stays flat for corpora larger than RAM.
"""
from __future__ import annotations

import copy
import math
from typing import Iterator

import numpy as np
import torch

from ulmfit.errors import UlmfitError
from ulmfit.text.token_docs import TokenDocs


class LMLoader:
    def __init__(self, docs: TokenDocs, bs: int = 64, bptt: int = 70, shuffle: bool = True,
                 variable_bptt: bool = False, seed: int = 0):
        if bs < 1 or bptt < 1:
            raise ValueError(f"bs and bptt must be positive, got bs={bs}, bptt={bptt}")
        n = docs.n_tokens
        if n - 1 < 2 * bs:
            raise UlmfitError(f"the language-model corpus has only {n} tokens, too few for batch size {bs} "
                              f"(need at least {2 * bs + 1}); use a smaller batch size (at most "
                              f"{max(1, (n - 1) // 2)}) or more text")
        self.docs, self.bs, self.bptt = docs, bs, bptt
        self.shuffle, self.variable_bptt, self.seed = shuffle, variable_bptt, seed
        self.row_len = (n - 1) // bs  # L: input positions per row; the (N-1) % bs tail is not used
        self.epoch = 0
        self.row0, self.n_rows = 0, bs  # the rows this loader yields (all of them unless sharded)
        self._plan_cache: tuple[int, list[tuple[int, int]]] | None = None

    def shard(self, rank: int, world: int, training: bool = True) -> "LMLoader":
        """Process `rank` of `world`: rows [rank*bs/world, (rank+1)*bs/world) of every batch, the same
        stream layout (row length, document order, window plan) as this loader's. Training needs
        equal shares (every rank then draws dropout masks of the same shapes)."""
        if training and self.bs % world:
            raise UlmfitError(f"a language-model batch of {self.bs} rows does not split evenly over {world} "
                              f"processes; use a batch size (bs) that is a multiple of {world}")
        if self.bs < world:
            raise UlmfitError(f"a language-model batch of {self.bs} rows cannot be split over {world} processes; "
                              f"use bs of at least {world}")
        out = copy.copy(self)
        out.row0, out.n_rows = rank * self.bs // world, (rank + 1) * self.bs // world - rank * self.bs // world
        return out

    @property
    def n_tokens(self) -> int:
        return self.docs.n_tokens

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose document order (and sequence lengths) the next iteration uses."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Number of batches this epoch (exact, also with variable_bptt: the plan is deterministic)."""
        if not self.variable_bptt:
            return math.ceil(self.row_len / self.bptt)
        return len(self._plan())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        lengths = self.docs.lengths[order]
        cum = np.zeros(len(order) + 1, dtype=np.int64)  # stream position where each permuted doc starts
        np.cumsum(lengths, out=cum[1:])
        src_start = self.docs.offsets[:-1][order]  # where that doc starts in docs.ids
        row_start = (self.row0 + np.arange(self.n_rows, dtype=np.int64))[:, None] * self.row_len
        for start, seq in self._plan():
            pos = row_start + (start + np.arange(seq + 1, dtype=np.int64))  # [rows, seq+1] stream positions
            d = np.searchsorted(cum, pos, side="right") - 1  # side=right skips empty docs
            window = np.asarray(self.docs.ids[src_start[d] + (pos - cum[d])], dtype=np.int64)
            yield torch.from_numpy(window[:, :-1].copy()), torch.from_numpy(window[:, 1:].copy())

    def _order(self) -> np.ndarray:
        n = len(self.docs)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def _plan(self) -> list[tuple[int, int]]:
        """(first column, sequence length) of every batch this epoch."""
        if self._plan_cache is not None and self._plan_cache[0] == self.epoch:
            return self._plan_cache[1]
        L, bptt, plan, i = self.row_len, self.bptt, [], 0
        if not self.variable_bptt:
            plan = [(s, min(bptt, L - s)) for s in range(0, L, bptt)]
        else:
            # Merity et al. 2017, sec. 4.1: vary the window so every token starts a window in some
            # epoch. Its own stream (the trailing 1) keeps the doc order equal with and without it.
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            while i < L:
                base = bptt if rng.random() < 0.95 else bptt / 2
                seq = min(max(5, int(rng.normal(base, 5))), L - i)
                plan.append((i, seq))
                i += seq
        self._plan_cache = (self.epoch, plan)
        return plan
