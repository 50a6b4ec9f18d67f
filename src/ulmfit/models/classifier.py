"""The ULMFiT classifier (Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text
Classification", arXiv:1801.06146): the AWD-LSTM encoder read in BPTT-sized chunks, concat pooling
of its last layer's output (§3.3), and BatchNorm / Dropout / Linear blocks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import AWDLSTM, _known_fields


@dataclass
class ClassifierConfig:
    """n_classes: output size. lin_sizes: hidden sizes of the head (fastai's lin_ftrs, default 50,
    Howard & Ruder 2018 §4 "Hyperparameters"). ps: dropout before each Linear, len(lin_sizes) + 1
    of them: fastai uses the classifier's output_p (0.4) * drop_mult on the pooled features, then
    0.1 per hidden layer; scale them yourself when you use a drop_mult. bptt: chunk length the
    encoder reads at a time (fastai's seq_len, 72). max_len: only each document's last max_len
    tokens are pooled (fastai's SentenceEncoder, 72 * 20); earlier tokens still build the state.
    """

    n_classes: int
    lin_sizes: tuple[int, ...] = (50,)
    ps: tuple[float, ...] = (0.4, 0.1)
    bptt: int = 72
    max_len: int = 72 * 20

    def __post_init__(self) -> None:
        self.lin_sizes, self.ps = tuple(int(n) for n in self.lin_sizes), tuple(float(p) for p in self.ps)
        if self.n_classes < 2:
            raise UlmfitError(f"classifier config: n_classes must be >= 2, got {self.n_classes}")
        if len(self.ps) != len(self.lin_sizes) + 1:
            raise UlmfitError(
                f"classifier config: ps needs len(lin_sizes) + 1 = {len(self.lin_sizes) + 1} values, got {len(self.ps)}"
            )
        if not all(0.0 <= p < 1.0 for p in self.ps):
            raise UlmfitError(f"classifier config: every value of ps must be in [0, 1), got {self.ps}")
        if self.bptt < 1 or self.max_len < 1:
            raise UlmfitError(f"classifier config: bptt and max_len must be >= 1, got {self.bptt}, {self.max_len}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lin_sizes"], d["ps"] = list(self.lin_sizes), list(self.ps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierConfig":
        return cls(**_known_fields(cls, d))


class ConcatPool:
    """Concat pooling (Howard & Ruder 2018 §3.3) accumulated over chunks of the time axis:
    [output at the row's last pooled position, max over the pooled positions, mean over them].

    `update(out, mask)` takes one chunk, out [n, c, F] for the first n rows of the batch and
    mask [n, c] (True = pool this position; a row's pooled positions are one contiguous run, in
    order across chunks). Only [B, 3F] running statistics are kept, never the whole sequence.
    """

    def __init__(self, n_rows: int, n_features: int, like: Tensor):
        self.last = like.new_zeros(n_rows, n_features)
        self.max = like.new_full((n_rows, n_features), float("-inf"))
        self.sum = like.new_zeros(n_rows, n_features)
        self.count = like.new_zeros(n_rows, 1)

    def update(self, out: Tensor, mask: Tensor) -> None:
        if not bool(mask.any()):
            return
        n = mask.size(0)
        head = pool_update((self.last[:n], self.max[:n], self.sum[:n], self.count[:n]), out, mask)
        self.last, self.max, self.sum, self.count = (_prefix(full, h) for full, h in
                                                     zip((self.last, self.max, self.sum, self.count), head))

    def features(self) -> Tensor:
        """[B, 3F]: last, max, mean (rows with no pooled position get 0 for the mean)."""
        return pool_features((self.last, self.max, self.sum, self.count))


PoolStats = tuple[Tensor, Tensor, Tensor, Tensor]  # last [n, F], max [n, F], sum [n, F], count [n, 1]


def pool_update(stats: PoolStats, out: Tensor, mask: Tensor) -> PoolStats:
    """One chunk into the running concat-pool statistics of its n rows (out of place, no
    data-dependent control flow, so it also exports to ONNX): out [n, c, F], mask [n, c]."""
    last, mx, total, count = stats
    c = mask.size(1)
    m = mask.unsqueeze(-1)
    has = m.any(1)  # [n, 1]
    pos = torch.arange(c, device=mask.device).expand_as(mask)
    last_idx = torch.where(mask, pos, torch.zeros_like(pos)).amax(1)  # last True of each row (0 if none)
    picked = out.gather(1, last_idx.view(-1, 1, 1).expand(-1, 1, out.size(2))).squeeze(1)
    return (torch.where(has, picked, last), torch.maximum(mx, out.masked_fill(~m, float("-inf")).amax(1)),
            total + out.masked_fill(~m, 0.0).sum(1), count + m.sum(1).to(out.dtype))


def pool_features(stats: PoolStats) -> Tensor:
    """Running statistics -> concat-pooled features [n, 3F]: last, max, mean."""
    last, mx, total, count = stats
    return torch.cat([last, mx, total / count.clamp_min(1)], 1)


def chunk_schedule(lengths: list[int], bptt: int) -> list[tuple[int, int, int]]:
    """The chunks a batch of documents is read in: (start, end, n) per chunk, n the number of
    rows still active (`lengths` sorted descending, so the active rows are a prefix)."""
    out = []
    for s in range(0, lengths[0] if lengths else 0, bptt):
        out.append((s, min(s + bptt, lengths[0]), sum(1 for L in lengths if L > s)))
    return out


def _prefix(full: Tensor, head: Tensor) -> Tensor:
    """`full` with its first len(head) rows replaced by `head` (out of place, for autograd)."""
    return head if head.size(0) == full.size(0) else torch.cat([head, full[head.size(0) :]])


def concat_pool(out: Tensor, mask: Tensor) -> Tensor:
    """Concat pooling of out [B, T, F] over the positions where mask [B, T] is True (one
    contiguous run per row, at least one position) -> [B, 3F]."""
    pool = ConcatPool(out.size(0), out.size(2), out)
    pool.update(out, mask)
    return pool.features()


class PoolingHead(nn.Module):
    """Concat pooling, then one block per layer: BatchNorm1d -> Dropout -> Linear, with ReLU
    between blocks and nothing after the last (fastai's PoolingLinearClassifier, Howard & Ruder
    2018 §3.3). `n_pooled`: pooled vectors per document (3 for concat pooling; 1 for a mean-pooled
    transformer, models/transformer.py)."""

    def __init__(self, in_features: int, cfg: ClassifierConfig, n_pooled: int = 3):
        super().__init__()
        sizes = [n_pooled * in_features, *cfg.lin_sizes, cfg.n_classes]
        layers: list[nn.Module] = []
        for i, p in enumerate(cfg.ps):
            layers += [nn.BatchNorm1d(sizes[i]), nn.Dropout(p), nn.Linear(sizes[i], sizes[i + 1])]
            if i < len(cfg.ps) - 1:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, out: Tensor, mask: Tensor) -> Tensor:
        """out [B, T, F] encoder output, mask [B, T] bool (True = pool this position) -> logits [B, C]."""
        return self.classify(concat_pool(out, mask))

    def classify(self, features: Tensor) -> Tensor:
        """Pooled features [B, 3F] -> logits [B, C]."""
        return self.layers(features)


class TextClassifier(nn.Module):
    """AWD-LSTM encoder + PoolingHead.

    Documents longer than `cfg.bptt` are read in bptt-sized chunks with the LSTM state carried
    from one chunk to the next (gradients flow through the whole document, as in fastai); only the
    outputs at each document's last `cfg.max_len` real tokens are pooled.

    Padding: a row whose document has ended before a chunk starts is left out of that chunk and
    every later one (rows are sorted by length, so the still-active rows are a prefix). Inside the
    chunk where a document ends, the LSTM does read its right-padding, but the LSTM is causal, so
    this only changes outputs at positions after the end (masked out of the pooling) and the state
    after the chunk (never used: the row is not in any later chunk). No encoder operation mixes
    rows, so one row's padding never reaches another row.

    Pooling is accumulated chunk by chunk (`ConcatPool`), so it holds [B, 3 * emb] numbers
    whatever max_len is. In training, each chunk draws new dropout masks (the weight-drop mask too:
    one per encoder call, as in fastai).
    """

    def __init__(self, encoder: AWDLSTM, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.head = PoolingHead(encoder.out_size, cfg)

    def features(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids [B, T] right-padded, lengths [B] (each in [1, T]) -> pooled features [B, 3 * emb]
        over each document's last max_len tokens, rows in the input order."""
        B, T = ids.shape
        lengths = lengths.to(device=ids.device, dtype=torch.long)
        if B == 0 or int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise UlmfitError(f"classifier input: lengths must be in [1, {T}] for ids of width {T}")
        if not self.training and int(lengths.max()) <= self.cfg.bptt:
            return self._one_chunk(ids, lengths)
        lengths, order = lengths.sort(descending=True, stable=True)
        ids = ids[order]
        starts = (lengths - self.cfg.max_len).clamp_min(0)  # absolute positions [start, length) are pooled
        lengths_list, bptt = lengths.tolist(), self.cfg.bptt
        pool = ConcatPool(B, self.encoder.out_size, torch.empty(0, device=ids.device))  # fp32 statistics
        state = None
        for s, e, n in chunk_schedule(lengths_list, bptt):  # n rows still active: a prefix (sorted)
            if state is not None:
                state = [(h[:, :n], c[:, :n]) for h, c in state]
            out, state = self.encoder(ids[:n, s:e], state)
            pos = torch.arange(s, e, device=ids.device)
            pool.update(out.float(), (pos >= starts[:n, None]) & (pos < lengths[:n, None]))
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(B, device=order.device)
        return pool.features()[inverse]

    def _one_chunk(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Inference when every document fits one chunk (tweets, most short texts): the same numbers as
        the chunk loop, without its sorting, state slicing and reordering."""
        T = int(lengths.max())
        out = self.encoder(ids[:, :T])[0].float()
        pos = torch.arange(T, device=ids.device)
        mask = (pos >= (lengths - self.cfg.max_len).clamp_min(0)[:, None]) & (pos < lengths[:, None])
        B, F = out.size(0), out.size(2)
        stats = (out.new_zeros(B, F), out.new_full((B, F), float("-inf")), out.new_zeros(B, F), out.new_zeros(B, 1))
        return pool_features(pool_update(stats, out, mask))

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids [B, T] right-padded (pad id from the encoder's config), lengths [B] -> logits [B, C]."""
        return self.head.classify(self.features(ids, lengths))

    def set_encoder_dtype(self, dtype: torch.dtype) -> "TextClassifier":
        """Inference in lower precision (recipes/predictor.py, `precision="bf16"`): the encoder's weights
        (embedding, LSTMs) and so its arithmetic and recurrent state in `dtype`; its output is cast back
        to fp32, so the pooling statistics and the head stay fp32 (the encoder is ~all of the cost).
        Casting back to fp32 does not restore the original weights: reload the model for that. Returns self."""
        self.encoder.to(dtype)
        return self

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[[embedding], [rnn0], [rnn1], ..., [head]]: fastai's awd_lstm_clas_split, lowest first."""
        return self.encoder.layer_groups() + [list(self.head.parameters())]
