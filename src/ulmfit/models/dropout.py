"""The three dropouts of the AWD-LSTM (Merity, Keskar & Socher 2017, "Regularizing and Optimizing
LSTM Language Models", arXiv:1708.02182).

- `embedding_dropout`: drop whole words from the vocabulary (§4.3, after Gal & Ghahramani 2016).
- `LockedDropout`: variational dropout, one mask per sequence reused at every time step (§4.2).
- `WeightDropLSTM`: DropConnect on the hidden-to-hidden matrix of an LSTM (§4.1).

All three are the identity in eval mode (and when p == 0). Inputs are batch-first.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence

State = tuple[Tensor, Tensor]


def _keep_mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """Bernoulli(1 - p) mask scaled by 1 / (1 - p), so the expected value is unchanged."""
    return like.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)


def embedding_dropout(
    weight: Tensor,
    ids: Tensor,
    p: float,
    training: bool,
    padding_idx: int | None = None,
) -> Tensor:
    """Look up `ids` [..] in `weight` [V, E], dropping whole words: returns [.., E].

    Merity et al. 2017 §4.3: a word dropped from the vocabulary is dropped at every position it
    occurs in the batch (its embedding row is zero for this forward pass); survivors are scaled by
    1 / (1 - p). We draw one Bernoulli per vocabulary row and gather it at `ids`, which equals
    `F.embedding(ids, weight * mask)` (same values, same gradient) without the [V, E] product.
    """
    emb = F.embedding(ids, weight, padding_idx=padding_idx)
    if not training or p == 0.0:
        return emb
    mask = _keep_mask((weight.size(0),), p, weight)
    return emb * mask[ids].unsqueeze(-1)


class LockedDropout(nn.Module):
    """Variational dropout (Merity et al. 2017 §4.2, Gal & Ghahramani 2016): one mask per sequence
    and feature, shared by all time steps. Input [B, T, H] (batch-first)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = _keep_mask((x.size(0), 1, x.size(2)), self.p, x)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WeightDropLSTM(nn.Module):
    """A single-layer batch-first LSTM with DropConnect on its hidden-to-hidden weight
    (Merity et al. 2017 §4.1, after Wan et al. 2013).

    The trainable matrix is `weight_hh_l0_raw` [4H, H]; the inner LSTM is `.module`. Both names
    are those of fastai's `WeightDropout`, to ease importing fastai weights. Each forward draws one
    dropout mask for that matrix, scales survivors by 1 / (1 - weight_p) and runs the LSTM with the
    dropped matrix through `torch.func.functional_call`. The mask is on the weight, so it is the
    same at every time step of the call (and of every row of the batch). In eval mode the raw
    weight is used as is.

    The inner LSTM has no `weight_hh_l0` Parameter of its own, so there is no second, dead copy of
    the matrix among `parameters()` or in the state dict.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_p: float):
        super().__init__()
        self.input_size, self.hidden_size, self.weight_p = input_size, hidden_size, float(weight_p)
        self.module = nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True)
        self.weight_hh_l0_raw = nn.Parameter(self.module.weight_hh_l0.detach().clone())
        # The inner LSTM's own Parameter goes; its slot becomes a plain (non-parameter,
        # non-buffer) attribute holding an empty placeholder. functional_call swaps a plain
        # attribute with setattr, which nn.RNNBase.__setattr__ mirrors into the LSTM's
        # flat-weight list, and puts the placeholder back afterwards, so the LSTM never runs with
        # a stale matrix or keeps the last dropped one (and its graph) alive. Being on the CPU
        # and empty, the placeholder also makes `flatten_parameters` a no-op after `.cuda()`.
        del self.module.weight_hh_l0
        self.module.weight_hh_l0 = torch.empty(0)

    def dropped_weight(self) -> Tensor:
        """The hidden-to-hidden matrix used by this forward pass (raw in eval mode)."""
        w = F.dropout(self.weight_hh_l0_raw, p=self.weight_p, training=self.training)
        # In eval F.dropout returns the Parameter itself; functional_call would then register it
        # in the inner LSTM for good (a duplicate key in state_dict). A view is a plain tensor.
        return w.view_as(w) if isinstance(w, nn.Parameter) else w

    def forward(
        self, x: Tensor | PackedSequence, state: State | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        """x [B, T, I] (or a PackedSequence), state (h, c) each [1, B, H] or None (zeros).
        Returns (out [B, T, H] or PackedSequence, (h, c))."""
        if not self.training and isinstance(x, Tensor):
            return self._eval_forward(x, state)
        args = (x,) if state is None else (x, state)
        params = {"weight_hh_l0": self.dropped_weight()}
        with warnings.catch_warnings():
            # cuDNN warns that the weights are not one contiguous chunk of memory: they cannot
            # be, the dropped matrix is a new tensor each call. The CPU never warns.
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            return functional_call(self.module, params, args)

    def _eval_forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Eval mode: the raw weights straight into `torch.lstm` (the op nn.LSTM calls), without
        `functional_call`'s per-call reparametrisation; same numbers, ~0.1 ms less per call."""
        m = self.module
        if state is None:
            zeros = x.new_zeros(1, x.size(0), self.hidden_size)
            state = (zeros, zeros)
        params = [m.weight_ih_l0, self.weight_hh_l0_raw, m.bias_ih_l0, m.bias_hh_l0]
        out, h, c = torch.lstm(x, state, params, True, 1, 0.0, False, False, True)
        return out, (h, c)

    def to_plain(self) -> nn.LSTM:
        """An ordinary batch-first nn.LSTM holding the raw (undropped) weights: what this layer
        computes in eval mode, in the form exporters know (ONNX's LSTM op). The weights are copies."""
        lstm = nn.LSTM(self.input_size, self.hidden_size, num_layers=1, batch_first=True)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(self.module.weight_ih_l0)
            lstm.weight_hh_l0.copy_(self.weight_hh_l0_raw)
            lstm.bias_ih_l0.copy_(self.module.bias_ih_l0)
            lstm.bias_hh_l0.copy_(self.module.bias_hh_l0)
        return lstm.to(self.weight_hh_l0_raw.device).eval()

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, weight_p={self.weight_p}"
