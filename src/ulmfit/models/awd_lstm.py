"""AWD-LSTM (Merity, Keskar & Socher 2017, arXiv:1708.02182): an embedding, a stack of LSTMs with
DropConnect on their recurrent weights, and variational dropout everywhere else; plus the language
model on top (a decoder tied to the embedding, §4.5) and the AR/TAR penalties (§4.6).

Shapes are batch-first: ids [B, T], outputs [B, T, features]. The recurrent state is a list with
one (h, c) pair per layer, each [1, B, hidden of that layer]; carrying it across batches (and
detaching it, `detach_state`) is the caller's job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ulmfit.errors import UlmfitError
from ulmfit.models.adaptive_softmax import TiedAdaptiveSoftmax
from ulmfit.models.dropout import LockedDropout, WeightDropLSTM, embedding_dropout
from ulmfit.models.linear_ce import linear_cross_entropy
from ulmfit.models.presets import PRESETS  # sizes per preset (torch-free, for the config checks)

State = list[tuple[Tensor, Tensor]]


# fastai's `awd_lstm_clas_config` dropouts, for the encoder of a classifier (the LM defaults of
# AWDLSTMConfig are fastai's `awd_lstm_lm_config`). Use `dataclasses.replace(cfg, **CLASSIFIER_DROPOUTS)`.
CLASSIFIER_DROPOUTS: dict[str, float] = dict(
    embed_p=0.05, input_p=0.4, weight_p=0.5, hidden_p=0.3, output_p=0.4
)

_DROPOUTS = ("embed_p", "input_p", "weight_p", "hidden_p", "output_p")
SOFTMAXES = ("full", "adaptive")  # the LM's output layer (AWDLSTMConfig.softmax); recipes/fields.py mirrors it


@dataclass
class AWDLSTMConfig:
    """Sizes from Merity et al. 2017 §5 (400 / 1150 / 3 layers). Dropouts are fastai's language
    model defaults; each is multiplied by `drop_mult` (ULMFiT's single knob, Howard & Ruder 2018).

    embed_p: whole-word embedding dropout (§4.3); input_p: locked dropout on the embeddings;
    weight_p: DropConnect on the LSTM hidden-to-hidden weights (§4.1); hidden_p: locked dropout
    between layers (§4.2); output_p: locked dropout on the last layer's output before the decoder.

    softmax / cutoffs: the language model's output layer only (the encoder ignores them): "full"
    (a linear decoder over the vocabulary) or "adaptive" (models/adaptive_softmax.py, its head ending
    at cutoffs[0] and a tail cluster starting at each cutoff; each < vocab_size).
    """

    vocab_size: int
    emb_size: int = 400
    hidden_size: int = 1150
    n_layers: int = 3
    pad_idx: int = 1
    embed_p: float = 0.02
    input_p: float = 0.25
    weight_p: float = 0.2
    hidden_p: float = 0.15
    output_p: float = 0.1
    drop_mult: float = 1.0
    tie_weights: bool = True
    softmax: str = "full"
    cutoffs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.cutoffs = tuple(int(c) for c in self.cutoffs)
        if self.softmax not in SOFTMAXES:
            raise UlmfitError(f"model config: softmax {self.softmax!r}; choose one of {', '.join(SOFTMAXES)}")
        if self.softmax == "adaptive" and (not self.cutoffs or list(self.cutoffs) != sorted(set(self.cutoffs))
                                           or self.cutoffs[0] < 1 or self.cutoffs[-1] >= self.vocab_size):
            raise UlmfitError(f"model config: an adaptive softmax needs cutoffs increasing strictly within "
                              f"(0, vocab_size {self.vocab_size}), got {list(self.cutoffs)}")
        if self.softmax == "full" and self.cutoffs:
            raise UlmfitError(f"model config: cutoffs {list(self.cutoffs)} are for softmax 'adaptive', not 'full'")
        for name in ("vocab_size", "emb_size", "hidden_size", "n_layers"):
            if int(getattr(self, name)) < 1:
                raise UlmfitError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.pad_idx < self.vocab_size:
            raise UlmfitError(
                f"model config: pad_idx {self.pad_idx} is outside the vocabulary (size {self.vocab_size})"
            )
        for name in _DROPOUTS:
            p = getattr(self, name) * self.drop_mult
            if not 0.0 <= p < 1.0:
                raise UlmfitError(
                    f"model config: {name} * drop_mult = {p:g}; it must be in [0, 1), lower drop_mult"
                )

    def p(self, name: str) -> float:
        """A dropout probability after `drop_mult`, e.g. `cfg.p("hidden_p")`."""
        return getattr(self, name) * self.drop_mult

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AWDLSTMConfig":
        return cls(**_known_fields(cls, d))

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> "AWDLSTMConfig":
        """`AWDLSTMConfig.preset("small", vocab_size=len(vocab), drop_mult=0.5)`."""
        if name not in PRESETS:
            raise UlmfitError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


def _known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UlmfitError(
            f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(names))}"
        )
    return dict(d)


def detach_state(state: State | None) -> State | None:
    """Cut the graph between batches (truncated BPTT) while keeping the values."""
    if state is None:
        return None
    return [(h.detach(), c.detach()) for h, c in state]


class AWDLSTM(nn.Module):
    """The encoder: embedding -> embedding dropout -> locked dropout (input_p) -> n_layers
    weight-dropped LSTMs with locked dropout (hidden_p) between them.

    Layer i reads emb_size (i == 0) or hidden_size features and writes hidden_size, except the last
    layer, which writes emb_size so the decoder can be tied to the embedding (Merity et al. §4.5).
    `forward` returns the last layer's raw output (no output dropout: the LM applies it).
    """

    init_range = 0.1  # uniform(-0.1, 0.1) embedding init, as in salesforce/awd-lstm-lm and fastai

    def __init__(self, cfg: AWDLSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_size, padding_idx=cfg.pad_idx)
        nn.init.uniform_(self.embedding.weight, -self.init_range, self.init_range)
        self.input_dp = LockedDropout(cfg.p("input_p"))
        sizes = [cfg.emb_size] + [cfg.hidden_size] * (cfg.n_layers - 1) + [cfg.emb_size]
        self.rnns = nn.ModuleList(
            WeightDropLSTM(sizes[i], sizes[i + 1], cfg.p("weight_p")) for i in range(cfg.n_layers)
        )
        self.hidden_dps = nn.ModuleList(LockedDropout(cfg.p("hidden_p")) for _ in range(cfg.n_layers - 1))

    @property
    def out_size(self) -> int:
        return self.cfg.emb_size

    def init_state(self, bs: int) -> State:
        """Zero state, one (h, c) pair per layer, each [1, bs, hidden of that layer]."""
        w = self.embedding.weight
        return [
            (w.new_zeros(1, bs, rnn.hidden_size), w.new_zeros(1, bs, rnn.hidden_size)) for rnn in self.rnns
        ]

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids [B, T] (any T >= 1), state from a previous call or None (zeros).
        Returns (last layer raw output [B, T, emb_size], new state)."""
        x = embedding_dropout(
            self.embedding.weight, ids, self.cfg.p("embed_p"), self.training, self.cfg.pad_idx
        )
        x = self.input_dp(x)
        new_state: State = []
        for i, rnn in enumerate(self.rnns):
            x, s = rnn(x, None if state is None else state[i])
            new_state.append(s)
            if i < len(self.hidden_dps):
                x = self.hidden_dps[i](x)
        return x, new_state

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[[embedding], [rnn0], [rnn1], ...]: lowest layer first (fastai's awd_lstm_clas_split)."""
        return [[self.embedding.weight]] + [list(rnn.parameters()) for rnn in self.rnns]


class LanguageModel(nn.Module):
    """AWD-LSTM language model: encoder, locked output dropout (output_p) and a decoder whose word
    rows are the embedding matrix when `cfg.tie_weights` (Merity et al. 2017 §4.5, Inan et al. 2016,
    Press & Wolf 2016): a linear layer over the vocabulary (`cfg.softmax == "full"`), or a tied
    adaptive softmax (`"adaptive"`, models/adaptive_softmax.py; Grave et al. 2017). Either way
    `decoder.weight` / `decoder.bias` are the word rows and biases ([V, E], [V]), and `forward`'s
    "logits" give the exact next-word distribution by softmax (log-probabilities for the adaptive
    head)."""

    def __init__(self, cfg: AWDLSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = AWDLSTM(cfg)
        self.output_dp = LockedDropout(cfg.p("output_p"))
        if cfg.softmax == "adaptive":
            self.decoder = TiedAdaptiveSoftmax(cfg.vocab_size, cfg.emb_size, cfg.cutoffs,
                                               weight=self.encoder.embedding.weight if cfg.tie_weights else None)
            return
        self.decoder = nn.Linear(cfg.emb_size, cfg.vocab_size)
        nn.init.zeros_(self.decoder.bias)
        if cfg.tie_weights:
            self.decoder.weight = self.encoder.embedding.weight
        else:
            nn.init.uniform_(self.decoder.weight, -AWDLSTM.init_range, AWDLSTM.init_range)

    def init_state(self, bs: int) -> State:
        return self.encoder.init_state(bs)

    def features(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State, Tensor]:
        """ids [B, T] -> (dropped_out, new state, raw_out): the last layer's output [B, T, emb_size]
        after output dropout (the decoder's input) and before it (for `ar_tar_loss`)."""
        raw_out, new_state = self.encoder(ids, state)
        return self.output_dp(raw_out), new_state, raw_out

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State, Tensor, Tensor]:
        """ids [B, T] -> (logits [B, T, V], new state, raw_out, dropped_out), the last two being the
        last layer's output [B, T, emb_size] before and after output dropout (for `ar_tar_loss`)."""
        dropped_out, new_state, raw_out = self.features(ids, state)
        return self.decoder(dropped_out), new_state, raw_out, dropped_out

    def cross_entropy(self, dropped_out: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy of the decoder on `dropped_out` [B, T, E] against `targets`
        [B, T]: `F.cross_entropy(self.decoder(dropped_out), targets)` without the [B*T, V] logits
        (models/linear_ce.py; for training, where they are the largest cost of a step). The adaptive
        head computes each tail cluster only for the tokens whose target is in it."""
        if self.cfg.softmax == "adaptive":
            return self.decoder.loss(dropped_out.reshape(-1, dropped_out.shape[-1]), targets.reshape(-1))
        return linear_cross_entropy(dropped_out.reshape(-1, dropped_out.shape[-1]), self.decoder.weight,
                                    self.decoder.bias, targets.reshape(-1))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[[rnn0], [rnn1], ..., [embedding (= tied decoder weight), decoder bias (, the adaptive
        head's cluster vectors and projections)]]: fastai's awd_lstm_lm_split, which puts the
        embedding/decoder last so it gets the highest lr (and trains it in the frozen epoch)."""
        emb = self.encoder.embedding.weight
        last = [emb] + [p for p in self.decoder.parameters() if p is not emb]
        return [list(rnn.parameters()) for rnn in self.encoder.rnns] + [last]


def ar_tar_loss(raw_out: Tensor, dropped_out: Tensor, alpha: float = 2.0, beta: float = 1.0) -> Tensor:
    """Activation regularization + temporal activation regularization (Merity et al. 2017 §4.6),
    the penalty to add to the cross-entropy; alpha = 2 and beta = 1 are the paper's values.

    AR  = alpha * mean(dropped_out ** 2)            (L2 of the last layer's dropped output)
    TAR = beta * mean((raw_out[:, t+1] - raw_out[:, t]) ** 2)  (slowness of the raw output)
    Means are over every element, as in fastai's RNNRegularizer; TAR is 0 when T == 1.
    """
    loss = raw_out.new_zeros((), dtype=torch.float32)
    if alpha:
        loss = loss + alpha * dropped_out.float().pow(2).mean()
    if beta and raw_out.size(1) > 1:
        loss = loss + beta * (raw_out[:, 1:] - raw_out[:, :-1]).float().pow(2).mean()
    return loss
