"""ONNX export of the AWD-LSTM classifier and language model, and prediction through onnxruntime.

The exported graph is ONE BPTT CHUNK, with everything that crosses chunks as inputs and outputs:

    classifier:  ids [B, T] int64, mask [B, T] bool (positions to pool), h_i / c_i [1, B, H_i] per
                 layer, pool_last / pool_max / pool_sum [B, F], pool_count [B, 1]
              -> logits [B, C], the new h_i / c_i, the new pool statistics
    lm:          ids [B, T], h_i / c_i -> logits [B, T, V], the new h_i / c_i

B and T are dynamic. A document of any length is read as PyTorch reads it (`TextClassifier.features`):
the same `chunk_schedule` of bptt-sized chunks, rows sorted by length so the active rows are a prefix,
the state and the pooling statistics carried from chunk to chunk, only the last max_len tokens pooled.
That loop runs in Python around the session (`OnnxChunkModel`); the pooling arithmetic itself is
`pool_update`, the function PyTorch runs, exported inside the graph. Text to ids, batching and the
model folder are the predictor's (`ulmfit.load(DIR, runtime="onnx")`); `ulmfit export` writes files.

The LSTM export trap (fastai #2600): a `WeightDropLSTM` swaps its hidden-to-hidden matrix in at
every call, which tracing cannot follow; in eval mode it is an ordinary LSTM with the raw matrix, so
the graph is built from `WeightDropLSTM.to_plain()` copies and exports as ONNX's LSTM op.

The transformer classifier (models/transformer.py, e.g. MiniLM): the graph is ONE WINDOW PASS over a
batch's windows, then the merge back to documents, the pooling and the head:

    transformer: rows [W, width] int64 ([CLS] ... [SEP] [PAD]), attn [W, width] int64, r_idx / w_idx /
                 flat [N] int64 (where each window's content positions go), mask [B, T] bool
              -> logits [B, C]

W, width, N, B, T are dynamic. Documents are cut into overlapping windows by `cut_windows`, the
function PyTorch's `TransformerBackbone.encode` calls, run in Python around the session
(`OnnxTransformerModel`), with the window sizes and special ids from the file's metadata.

Exporter: the TorchScript one (`dynamo=False`): ~2 s for a small model against ~10 s for the dynamo
exporter, and a graph of plain LSTM nodes. Files are ONNX protobuf: no code runs on load.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import AWDLSTM, LanguageModel
from ulmfit.models.classifier import TextClassifier, chunk_schedule, pool_features, pool_update
from ulmfit.models.backbone import length_mask
from ulmfit.models.transformer import PREDICT_BATCH_PIECES, TransformerClassifier, cut_windows, merge_windows

OPSET = 17  # LSTM, ReduceMax on int64, Gather: all in opset 14+; 17 is what onnxruntime >= 1.14 runs fully


def check_exportable(model, what: str) -> None:
    """One line for what ONNX export does not cover (SiATL, ensembles)."""
    if not isinstance(model, (TextClassifier, LanguageModel, TransformerClassifier)):
        kind = type(model).__name__ if model is not None else "model with its own text pipeline"
        raise UlmfitError(f"{what}: ONNX export covers the AWD-LSTM classifier and language model (ulmfit, distill "
                          f"recipes) and the transformer classifier; this folder holds a {kind}: serve and predict "
                          f"it with --runtime torch")


def export_model(model: nn.Module, meta: dict) -> bytes:
    """A loaded classifier (AWD-LSTM or transformer) -> ONNX bytes, by its kind."""
    if isinstance(model, TransformerClassifier):
        return export_transformer(model, meta)
    return export_classifier(model, meta)


def onnx_model(data: bytes, threads: int | None = None):
    """The predictor-side model of exported bytes: `forward(ids, lengths) -> logits` in numpy."""
    kind = read_onnx_meta(data).get("kind")
    return OnnxTransformerModel(data, threads) if kind == "transformer" else OnnxChunkModel(data, threads)


class _Encoder(nn.Module):
    """The AWD-LSTM encoder in eval mode with plain LSTMs: ids, [(h, c)] -> last layer output, [(h, c)]."""

    def __init__(self, enc: AWDLSTM):
        super().__init__()
        self.embedding = enc.embedding
        self.rnns = nn.ModuleList(r.to_plain() for r in enc.rnns)

    def forward(self, ids: Tensor, hs: Sequence[Tensor], cs: Sequence[Tensor]) -> tuple[Tensor, list, list]:
        x = self.embedding(ids)
        new_h, new_c = [], []
        for rnn, h, c in zip(self.rnns, hs, cs):
            x, (h, c) = rnn(x, (h, c))
            new_h.append(h)
            new_c.append(c)
        return x, new_h, new_c


class ClassifierChunk(nn.Module):
    """One chunk of `TextClassifier.features` + the head, in exportable form (see the module doc)."""

    def __init__(self, clf: TextClassifier):
        super().__init__()
        self.n_layers = len(clf.encoder.rnns)
        self.encoder = _Encoder(clf.encoder)
        self.head = clf.head

    def forward(self, ids: Tensor, mask: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        L = self.n_layers
        hs, cs, stats = rest[:L], rest[L:2 * L], tuple(rest[2 * L:])
        out, hs, cs = self.encoder(ids, hs, cs)
        stats = pool_update(stats, out, mask)
        return (self.head.classify(pool_features(stats)), *hs, *cs, *stats)


class LMChunk(nn.Module):
    """The language model on one chunk: ids, states -> next-word logits, new states."""

    def __init__(self, lm: LanguageModel):
        super().__init__()
        self.n_layers = len(lm.encoder.rnns)
        self.encoder = _Encoder(lm.encoder)
        self.decoder = lm.decoder

    def forward(self, ids: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        L = self.n_layers
        out, hs, cs = self.encoder(ids, rest[:L], rest[L:])
        return (self.decoder(out), *hs, *cs)


class TransformerWindowPass(nn.Module):
    """`TransformerClassifier.forward` after the windows are cut: one encoder pass over the windows,
    the merge back to documents, the pooling and the head (see the module doc)."""

    def __init__(self, clf: TransformerClassifier):
        super().__init__()
        self.clf = clf

    def forward(self, rows: Tensor, attn: Tensor, r_idx: Tensor, w_idx: Tensor, flat: Tensor, mask: Tensor) -> Tensor:
        hidden = self.clf.backbone.encode_windows(rows, attn)
        feats = merge_windows(hidden, r_idx, w_idx, flat, mask.size(0), mask.size(1))
        return self.clf.head.classify(self.clf.pool(feats, mask))


TRANSFORMER_IN = ["rows", "attn", "r_idx", "w_idx", "flat", "mask"]


def export_transformer(model: TransformerClassifier, meta: dict) -> bytes:
    """A `TransformerClassifier` -> ONNX bytes of `TransformerWindowPass`, window sizes in the metadata."""
    model = model.eval()
    bb = model.backbone
    ids, lengths = torch.full((2, 4), 5, dtype=torch.long), torch.tensor([4, 2])
    w = cut_windows(ids, lengths, bb.cfg.window, bb.cfg.overlap, bb.cls_id, bb.sep_id, bb.pad_id)
    args = (w.rows, w.attn, w.r_idx, w.w_idx, w.flat, length_mask(lengths, 4))
    dyn = {"rows": {0: "windows", 1: "width"}, "attn": {0: "windows", 1: "width"}, "r_idx": {0: "n"},
           "w_idx": {0: "n"}, "flat": {0: "n"}, "mask": {0: "batch", 1: "time"}, "logits": {0: "batch"}}
    info = {"kind": "transformer", "window": bb.cfg.window, "overlap": bb.cfg.overlap, "cls_id": bb.cls_id,
            "sep_id": bb.sep_id, "pad_idx": bb.pad_id, "pooling": model.pooling, **meta}
    return _export(TransformerWindowPass(model).eval(), args, TRANSFORMER_IN, ["logits"], dyn, info)


def _state_names(n_layers: int, suffix: str = "") -> list[str]:
    return [f"h{i}{suffix}" for i in range(n_layers)] + [f"c{i}{suffix}" for i in range(n_layers)]


POOL = ["pool_last", "pool_max", "pool_sum", "pool_count"]


def export_classifier(model: TextClassifier, meta: dict) -> bytes:
    """A `TextClassifier` -> ONNX bytes of `ClassifierChunk`, with `meta` (JSON-able) as metadata."""
    model = model.eval()
    step = ClassifierChunk(model).eval()
    L, F = step.n_layers, model.encoder.out_size
    B, T = 2, 3
    hidden = [r.hidden_size for r in model.encoder.rnns]
    w = model.encoder.embedding.weight
    args = (torch.ones(B, T, dtype=torch.long), torch.ones(B, T, dtype=torch.bool),
            *[w.new_zeros(1, B, H) for H in hidden], *[w.new_zeros(1, B, H) for H in hidden],
            w.new_zeros(B, F), w.new_full((B, F), float("-inf")), w.new_zeros(B, F), w.new_zeros(B, 1))
    names_in = ["ids", "mask", *_state_names(L), *POOL]
    names_out = ["logits", *_state_names(L, "_out"), *[p + "_out" for p in POOL]]
    dyn = {"ids": {0: "batch", 1: "time"}, "mask": {0: "batch", 1: "time"}, "logits": {0: "batch"}}
    for n in _state_names(L) + _state_names(L, "_out"):
        dyn[n] = {1: "batch"}
    for n in POOL + [p + "_out" for p in POOL]:
        dyn[n] = {0: "batch"}
    info = {"kind": "classifier", "n_layers": L, "hidden": hidden, "features": F, "bptt": model.cfg.bptt,
            "max_len": model.cfg.max_len, "pad_idx": model.encoder.cfg.pad_idx, **meta}
    return _export(step, args, names_in, names_out, dyn, info)


def export_lm(lm: LanguageModel, meta: dict) -> bytes:
    lm = lm.eval()
    step = LMChunk(lm).eval()
    L = step.n_layers
    hidden = [r.hidden_size for r in lm.encoder.rnns]
    w = lm.encoder.embedding.weight
    args = (torch.ones(2, 3, dtype=torch.long), *[w.new_zeros(1, 2, H) for H in hidden],
            *[w.new_zeros(1, 2, H) for H in hidden])
    dyn = {"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    for n in _state_names(L) + _state_names(L, "_out"):
        dyn[n] = {1: "batch"}
    info = {"kind": "lm", "n_layers": L, "hidden": hidden, "vocab_size": lm.cfg.vocab_size,
            "pad_idx": lm.cfg.pad_idx, **meta}
    return _export(step, args, ["ids", *_state_names(L)], ["logits", *_state_names(L, "_out")], dyn, info)


def _export(step: nn.Module, args: tuple, names_in: list[str], names_out: list[str], dyn: dict, info: dict) -> bytes:
    import onnx

    from ulmfit import __version__

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(step, args, buf, input_names=names_in, output_names=names_out, dynamic_axes=dyn,
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in {**info, "ulmfit_version": __version__}.items():
        proto.metadata_props.add(key=k, value=json.dumps(v))
    return proto.SerializeToString()


def read_onnx_meta(data: bytes | str | Path) -> dict:
    import onnx

    proto = onnx.load_from_string(data) if isinstance(data, bytes) else onnx.load(str(data))
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


def session(data: bytes, threads: int | None = None):
    """An onnxruntime session on the CPU, with `threads` intra-op threads (default: torch's setting)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # shape-inference notes on dynamic axes are not for users
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


class OnnxChunkModel:
    """`forward(ids, lengths) -> logits` of a `TextClassifier`, computed by an exported `ClassifierChunk`
    in onnxruntime with the chunk loop of `TextClassifier.features` around it (numpy in, numpy out)."""

    def __init__(self, data: bytes, threads: int | None = None):
        self.meta = read_onnx_meta(data)
        if self.meta.get("kind") != "classifier":
            raise UlmfitError(f"ONNX model holds a {self.meta.get('kind')!r}, not a classifier")
        self.sess = session(data, threads)
        self.n_layers, self.hidden, self.F = self.meta["n_layers"], self.meta["hidden"], self.meta["features"]
        self.bptt, self.max_len = self.meta["bptt"], self.meta["max_len"]
        self.names_in = [i.name for i in self.sess.get_inputs()]

    def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """ids [B, T] right-padded, lengths [B] sorted descending (as `ClassificationLoader` gives)."""
        B, L = len(lengths), self.n_layers
        lengths = np.asarray(lengths, dtype=np.int64)
        if B and np.any(lengths[:-1] < lengths[1:]):
            raise ValueError("OnnxChunkModel: rows must be sorted by length, longest first")
        starts = np.maximum(lengths - self.max_len, 0)
        carried = [np.zeros((1, B, H), np.float32) for H in self.hidden * 2]  # h_0..h_{L-1}, c_0..c_{L-1}
        stats = [np.zeros((B, self.F), np.float32), np.full((B, self.F), -np.inf, np.float32),
                 np.zeros((B, self.F), np.float32), np.zeros((B, 1), np.float32)]
        logits = None
        for s, e, n in chunk_schedule(lengths.tolist(), self.bptt):
            pos = np.arange(s, e)
            mask = (pos >= starts[:n, None]) & (pos < lengths[:n, None])
            feed = [np.ascontiguousarray(ids[:n, s:e]), mask, *[x[:, :n] for x in carried], *[x[:n] for x in stats]]
            out = self.sess.run(None, dict(zip(self.names_in, feed)))
            if logits is None:
                logits = np.zeros((B, out[0].shape[1]), np.float32)
            logits[:n] = out[0]  # a row's logits are final after the last chunk it is in
            for x, new in zip(carried, out[1:1 + 2 * L]):
                x[:, :n] = new
            for x, new in zip(stats, out[1 + 2 * L:]):
                x[:n] = new
        return logits




class OnnxTransformerModel:
    """`forward(ids, lengths) -> logits` of a `TransformerClassifier`, computed by an exported
    `TransformerWindowPass` in onnxruntime; the windows are cut by `cut_windows` (numpy in, numpy out)."""

    def __init__(self, data: bytes, threads: int | None = None):
        self.meta = read_onnx_meta(data)
        if self.meta.get("kind") != "transformer":
            raise UlmfitError(f"ONNX model holds a {self.meta.get('kind')!r}, not a transformer classifier")
        self.sess = session(data, threads)
        self.max_batch_pieces = PREDICT_BATCH_PIECES  # one pass reads all of a batch's windows: bound the batch

    def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """ids [B, T] right-padded word pieces (no [CLS]/[SEP]), lengths [B] (each >= 1)."""
        m = self.meta
        ids_t, lengths_t = torch.as_tensor(np.asarray(ids, dtype=np.int64)), torch.as_tensor(np.asarray(lengths, dtype=np.int64))
        w = cut_windows(ids_t, lengths_t, m["window"], m["overlap"], m["cls_id"], m["sep_id"], m["pad_idx"])
        mask = length_mask(lengths_t, ids_t.shape[1])
        feed = [w.rows, w.attn, w.r_idx, w.w_idx, w.flat, mask]
        return self.sess.run(None, {k: v.numpy() for k, v in zip(TRANSFORMER_IN, feed)})[0]
