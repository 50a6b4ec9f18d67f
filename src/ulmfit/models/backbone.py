"""The backbone interface: what a recipe needs from a pretrained language model.

A backbone turns a right-padded batch of token ids into per-token features, has its own
language-model objective, and splits its parameters into layer groups (lowest first) for
discriminative rates and gradual unfreezing. The AWD-LSTM (models/awd_lstm_backbone.py) is the first
implementation; a transformer encoder implements the same methods. Recipes talk only to this.

Outside the nn.Module a backbone kind registers a `BackboneSpec`: how to build a new one for a
vocabulary, how to save and load one (weights as safetensors, config as JSON, so a model folder
reloads offline) and its text pipeline (texts -> token ids: the AWD-LSTM's Tokenizer + Vocab; a
transformer's WordPiece tokenizer). `get_backbone(kind)` dispatches by name, so `--backbone NAME`
and the predictor need no string comparisons.

    class MyBackbone(Backbone):
        kind = "mine"
        def encode(self, ids, lengths): ...      # -> features [B, T, F], mask [B, T]
        def lm_loss(self, ids, lengths): ...     # -> scalar
        def layer_groups(self): ...              # -> [[params of the lowest group], ..., [top]]

    register_backbone(BackboneSpec("mine", build=..., config=..., from_config=..., ...))
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor, nn

from ulmfit.errors import UlmfitError


class TextPipeline(Protocol):
    """Texts -> token ids, as the backbone was trained to read them."""

    pad_id: int

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        ...


class Backbone(nn.Module, ABC):
    """Abstract base of every backbone. Subclasses set `kind`, `out_size` and `pad_id`."""

    kind: str = ""
    out_size: int  # feature size F per token
    pad_id: int

    @abstractmethod
    def encode(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """ids [B, T] right-padded, lengths [B] -> (features [B, T, F], mask [B, T] bool of real
        tokens). Long documents are read the backbone's own way (BPTT chunks carrying state for the
        AWD-LSTM, overlapping windows for a transformer), never silently cut."""

    @abstractmethod
    def lm_loss(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The backbone's own language-model objective on a batch (next word for the AWD-LSTM,
        masked word for an encoder), a scalar averaged over the predicted tokens."""

    @abstractmethod
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups, lowest first (discriminative rates, gradual unfreezing)."""

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode(ids, lengths)


def length_mask(lengths: Tensor, width: int) -> Tensor:
    """[B] lengths -> [B, width] bool, True at real (non-padding) positions."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


@dataclass(frozen=True)
class BackboneSpec:
    """How a backbone kind is built and stored (the model-folder side of the interface).

    build(pipeline, options) -> Backbone         a new backbone for a text pipeline (options: e.g. a preset)
    config(backbone) -> dict                     JSON that rebuilds its architecture
    from_config(config) -> Backbone              that architecture, untrained (weights are loaded after)
    pipeline_to_json(pipeline) -> dict           the text pipeline as JSON ...
    pipeline_from_json(d) -> pipeline            ... and back

    recipes/model_dir.py `save_backbone` / `load_backbone` write and read a folder with these
    (backbone.json + backbone.safetensors), so every kind reloads offline the same way.
    """

    kind: str
    build: Callable[[Any, dict], Backbone]
    config: Callable[[Backbone], dict]
    from_config: Callable[[dict], Backbone]
    pipeline_to_json: Callable[[Any], dict]
    pipeline_from_json: Callable[[dict], Any]
    summary: str = ""


_BACKBONES: dict[str, BackboneSpec] = {}
# The modules whose import registers the shipped backbones.
BUILTIN_MODULES = ("ulmfit.models.awd_lstm_backbone", "ulmfit.models.transformer")
_loaded = False


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    _BACKBONES[spec.kind] = spec
    return spec


def backbones() -> dict[str, BackboneSpec]:
    global _loaded
    if not _loaded:
        _loaded = True
        import importlib

        for module in BUILTIN_MODULES:
            importlib.import_module(module)
    return dict(_BACKBONES)


def get_backbone(kind: str) -> BackboneSpec:
    all_ = backbones()
    if kind not in all_:
        raise UlmfitError(f"backbone {kind!r} is not available; choose one of {', '.join(all_)}")
    return all_[kind]


class PooledClassifier(nn.Module):
    """A classifier over any backbone: masked mean and max pooling of its features (as ULMFiT's
    concat pooling, §3.3, without the last-state term, which an encoder does not have), dropout,
    one linear layer. forward(ids, lengths) -> logits [B, C], the interface every classifier of the
    package shares; layer_groups = the backbone's groups + [head]."""

    def __init__(self, backbone: Backbone, n_classes: int, p: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(p), nn.Linear(2 * backbone.out_size, n_classes))

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        feats, mask = self.backbone.encode(ids, lengths)
        m = mask.unsqueeze(-1).to(feats.dtype)
        mean = (feats * m).sum(1) / m.sum(1).clamp_min(1)
        mx = feats.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
        return self.head(torch.cat([mean, mx], -1))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return self.backbone.layer_groups() + [list(self.head.parameters())]
