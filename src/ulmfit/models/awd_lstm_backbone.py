"""The AWD-LSTM as a `Backbone` (models/backbone.py): the first implementation of the interface.

encode: the encoder reads the batch in BPTT-sized chunks carrying its state (as the ULMFiT
classifier does), so a long document is read whole; features are the last layer's output.
lm_loss: next-token cross-entropy on the batch (padding never a target). layer_groups: the
classifier split, lowest first ([embedding], [rnn0], [rnn1], ...). The text pipeline is the
house Tokenizer + Vocab.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
from ulmfit.models.backbone import Backbone, BackboneSpec, length_mask, register_backbone
from ulmfit.models.siatl import next_token_loss
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab


@dataclass
class AWDTextPipeline:
    """Texts -> ids with the house tokenizer and a vocabulary."""

    tokenizer: Tokenizer
    vocab: Vocab
    pad_id: int = 1  # xxpad

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.vocab.numericalize(t).tolist() for t in self.tokenizer.tokenize_many(list(texts))]


class AWDLSTMBackbone(Backbone):
    kind = "awd_lstm"

    def __init__(self, lm: LanguageModel, bptt: int = 72):
        super().__init__()
        self.lm, self.bptt = lm, bptt
        self.out_size, self.pad_id = lm.cfg.emb_size, lm.cfg.pad_idx

    def encode(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        outs, state = [], None
        for s in range(0, ids.size(1), self.bptt):
            out, state = self.lm.encoder(ids[:, s:s + self.bptt], state)
            outs.append(out)
        return torch.cat(outs, 1), length_mask(lengths.to(ids.device), ids.size(1))

    def lm_loss(self, ids: Tensor, lengths: Tensor) -> Tensor:
        logits, _, _, _ = self.lm(ids)
        return next_token_loss(logits, ids, lengths)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return self.lm.encoder.layer_groups()


def _build(pipeline: AWDTextPipeline, options: dict) -> AWDLSTMBackbone:
    cfg = AWDLSTMConfig.preset(options.get("preset", "small"), vocab_size=len(pipeline.vocab),
                               **{k: v for k, v in options.items() if k not in ("preset", "bptt")})
    return AWDLSTMBackbone(LanguageModel(cfg), bptt=options.get("bptt", 72))


SPEC = register_backbone(BackboneSpec(
    kind="awd_lstm", build=_build,
    config=lambda b: {"lm": b.lm.cfg.to_dict(), "bptt": b.bptt},
    from_config=lambda d: AWDLSTMBackbone(LanguageModel(AWDLSTMConfig.from_dict(d["lm"])), bptt=d["bptt"]),
    pipeline_to_json=lambda p: {"tokenizer": asdict(p.tokenizer.config), "itos": p.vocab.itos},
    pipeline_from_json=lambda d: AWDTextPipeline(Tokenizer(TokenizerConfig(**d["tokenizer"])), Vocab(d["itos"])),
    summary="AWD-LSTM (Merity et al. 2017): 3-layer weight-dropped LSTM, tied decoder"))
