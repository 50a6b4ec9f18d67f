"""SiATL (Chronopoulou, Baziotis & Potamianos, NAACL 2019, "An Embarrassingly Simple Approach for
Transfer Learning from Pretrained Language Models", arXiv:1902.10547): the pretrained AWD-LSTM
language model keeps its LM head, and a new task-specific LSTM with self-attention and a linear
classifier goes on top of its last layer (the paper's Figure 1):

    ids -> embedding -> pretrained LSTMs -> output dropout -+-> tied decoder -> LM logits  [B, T, V]
                                                            +-> task LSTM -> self-attention
                                                                -> dropout -> linear -> class logits [B, C]

Training adds the LM loss on the same batch to the task loss (weighted by gamma, see
`ulmfit.train.siatl_schedule`), which keeps the pretrained layers a language model while they adapt.

Long documents are truncated to their first `max_len` tokens (not read in chunks): the attention
pools over the whole sequence at once and the LM term needs [B, T, vocab] logits in memory, so the
length must be bounded; SiATL is meant for short texts (the authors' code truncates to 50-80
tokens), and keeping the first tokens matches `ClassificationLoader(max_tokens=...)`, so the
loader can cut batches to the same width.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import AWDLSTM, AWDLSTMConfig, LanguageModel, State, _known_fields
from ulmfit.models.dropout import LockedDropout


@dataclass
class SiatlHeadConfig:
    """n_classes: output size. task_hidden: units of the new LSTM (the authors' code: 100).
    head_p: dropout on the attention-pooled vector before the classifier (the authors' code has 0.3
    as `attention_dropout`). max_len: documents are truncated to their first max_len tokens."""

    n_classes: int
    task_hidden: int = 128
    head_p: float = 0.3
    max_len: int = 128

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise UlmfitError(f"siatl head: n_classes must be >= 2, got {self.n_classes}")
        if self.task_hidden < 1 or self.max_len < 1:
            raise UlmfitError(f"siatl head: task_hidden and max_len must be >= 1, got {self.task_hidden}, {self.max_len}")
        if not 0.0 <= self.head_p < 1.0:
            raise UlmfitError(f"siatl head: head_p must be in [0, 1), got {self.head_p}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SiatlHeadConfig":
        return cls(**_known_fields(cls, d))


def padding_mask(lengths: Tensor, width: int) -> Tensor:
    """[B, width] bool, True at the real tokens of each right-padded row."""
    return torch.arange(width, device=lengths.device) < lengths[:, None]


class SelfAttentionPool(nn.Module):
    """Self-attention pooling over time (the paper's §2, after Bahdanau et al. / Yang et al.):
    e_t = tanh(w . h_t + b), a = softmax(e) over the real tokens only, r = sum_t a_t h_t.

    Padding positions get energy -inf before the softmax, so their weight is exactly 0 and adding
    padding to a row does not change its weights or its pooled vector."""

    def __init__(self, size: int):
        super().__init__()
        self.score = nn.Linear(size, 1)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """h [B, T, H], mask [B, T] (True = real token, at least one per row) -> (r [B, H], a [B, T])."""
        energies = torch.tanh(self.score(h).squeeze(-1)).float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(energies, dim=-1)
        pooled = torch.bmm(weights.unsqueeze(1).to(h.dtype), h).squeeze(1)
        return pooled, weights


class SiatlClassifier(nn.Module):
    """Pretrained AWD-LSTM encoder + its tied LM decoder + task LSTM, self-attention, classifier.

    `forward(ids, lengths)` gives class logits (the interface of `TextClassifier`);
    `forward_with_lm(ids, lengths)` gives the class logits and the LM logits of the same batch;
    `language_model(ids, state)` runs the LM alone on a stream (unlabelled text).
    """

    def __init__(self, enc_cfg: AWDLSTMConfig, head_cfg: SiatlHeadConfig):
        super().__init__()
        self.enc_cfg, self.cfg = enc_cfg, head_cfg
        self.encoder = AWDLSTM(enc_cfg)
        self.output_dp = LockedDropout(enc_cfg.p("output_p"))  # shared by both heads, as in the authors' code
        self.decoder = nn.Linear(enc_cfg.emb_size, enc_cfg.vocab_size)
        nn.init.zeros_(self.decoder.bias)
        if enc_cfg.tie_weights:
            self.decoder.weight = self.encoder.embedding.weight  # Merity et al. 2017 §4.5
        else:
            nn.init.uniform_(self.decoder.weight, -AWDLSTM.init_range, AWDLSTM.init_range)
        self.task_rnn = nn.LSTM(enc_cfg.emb_size, head_cfg.task_hidden, batch_first=True)
        self.attention = SelfAttentionPool(head_cfg.task_hidden)
        self.head_dp = nn.Dropout(head_cfg.head_p)
        self.classifier = nn.Linear(head_cfg.task_hidden, head_cfg.n_classes)

    @classmethod
    def from_language_model(cls, lm: LanguageModel, head_cfg: SiatlHeadConfig,
                            enc_cfg: AWDLSTMConfig | None = None) -> "SiatlClassifier":
        """The pretrained LM's encoder and decoder, new task layers. `enc_cfg` may change the
        dropouts but not the sizes (default: the LM's own config)."""
        enc_cfg = enc_cfg or lm.cfg
        model = cls(enc_cfg, head_cfg)
        model.encoder.load_state_dict(lm.encoder.state_dict())
        with torch.no_grad():
            model.decoder.bias.copy_(lm.decoder.bias)
            if not enc_cfg.tie_weights:
                model.decoder.weight.copy_(lm.decoder.weight)
        return model

    # ------------------------------------------------------------------------------- forward
    def _check(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Validate, then truncate to the first max_len tokens."""
        lengths = lengths.to(device=ids.device, dtype=torch.long)
        B, T = ids.shape
        if B == 0 or lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise UlmfitError(f"siatl input: lengths must be [B] values in [1, {T}] for ids of width {T}")
        T = min(int(lengths.max()), self.cfg.max_len)
        return ids[:, :T], lengths.clamp(max=T)

    def _encode(self, ids: Tensor) -> Tensor:
        """The pretrained stack's last-layer output after output dropout, [B, T, emb]."""
        raw, _ = self.encoder(ids)
        return self.output_dp(raw)

    def _classify(self, enc_out: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.task_rnn(enc_out)  # causal, so padding after a row's end never reaches its real positions
        pooled, _ = self.attention(h, padding_mask(lengths, h.size(1)))
        return self.classifier(self.head_dp(pooled))

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids [B, T] right-padded LongTensor, lengths [B] -> class logits [B, C]."""
        ids, lengths = self._check(ids, lengths)
        return self._classify(self._encode(ids), lengths)

    def forward_with_lm(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """-> (class logits [B, C], LM logits [B, T', V]), T' = min(max length, max_len); position
        t predicts token t + 1 of its document (score it with `next_token_loss`)."""
        ids, lengths = self._check(ids, lengths)
        enc_out = self._encode(ids)
        return self._classify(enc_out, lengths), self.decoder(enc_out)

    def language_model(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The LM alone on a token stream (e.g. unlabelled text): ids [B, T] -> (logits [B, T, V], state)."""
        raw, state = self.encoder(ids, state)
        return self.decoder(self.output_dp(raw)), state

    @torch.no_grad()
    def attention_weights(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The attention weights [B, T'] of each token (0 at padding), for inspection."""
        ids, lengths = self._check(ids, lengths)
        h, _ = self.task_rnn(self._encode(ids))
        return self.attention(h, padding_mask(lengths, h.size(1)))[1]

    # -------------------------------------------------------------------------- parameters
    def partitions(self) -> dict[str, list[nn.Parameter]]:
        """The three parts that sequential unfreezing and the two optimizers work on:
        `new` (task LSTM, attention, classifier), `lstm` (pretrained LSTMs + decoder bias: the LM
        head on the LSTM's output trains with it, as in the authors' code) and `embedding` (the
        embedding, which is also the tied decoder weight; plus the decoder weight when untied)."""
        new = [*self.task_rnn.parameters(), *self.attention.parameters(), *self.classifier.parameters()]
        lstm = [p for rnn in self.encoder.rnns for p in rnn.parameters()] + [self.decoder.bias]
        embedding = [self.encoder.embedding.weight]
        if not self.enc_cfg.tie_weights:
            embedding.append(self.decoder.weight)
        return {"new": new, "lstm": lstm, "embedding": embedding}

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[[embedding], [pretrained LSTMs, decoder bias], [new layers]]: lowest first."""
        parts = self.partitions()
        return [parts["embedding"], parts["lstm"], parts["new"]]


def next_token_loss(lm_logits: Tensor, ids: Tensor, lengths: Tensor) -> Tensor:
    """Mean cross-entropy of predicting each document's next token: position t of row b is scored
    against ids[b, t + 1] when t + 1 < lengths[b]. Padding is never a target and a prediction made
    at or after a document's last token is never scored (the authors' code: targets are the inputs
    rolled by one, padding ignored). ids / lengths may be wider than the logits (truncation).
    Returns 0 when no row has two tokens."""
    T = lm_logits.size(1)
    ids, lengths = ids[:, :T], lengths.to(ids.device).clamp(max=T)
    mask = padding_mask(lengths - 1, T - 1)  # [B, T-1]: t + 1 < length
    if not bool(mask.any()):
        return lm_logits.new_zeros((), dtype=torch.float32)
    return F.cross_entropy(lm_logits[:, :-1][mask].float(), ids[:, 1:][mask])
