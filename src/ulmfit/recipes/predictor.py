"""A trained classifier loaded from its folder: `ulmfit.load(path).predict(texts)`.

A folder trained with `--direction both` holds two models, forward (the folder itself) and backward
(`bwd/`); `Classifier` averages their class probabilities, as ULMFiT §4 does. A backward model
reads every document reversed, so its `Member` reverses the token ids of each text before batching.

Precision (`precision=`, `--precision`): "fp32" is the exact path (what training evaluated, and what
the ONNX export computes); "bf16" runs the AWD-LSTM encoder with bf16 weights (the pooling and head
stay fp32, models/classifier.py `set_encoder_dtype`); "auto" (the default) is bf16 where the CPU
computes bf16 natively (train/precision.py) and the model supports it, else fp32. The steps that build
a model folder (calibration, validation reports, ensemble weights, teacher targets) use
`BUILD_PRECISION` (fp32), so a folder's artifacts are the same whatever CPU trained it. Measured on a
trained tweets classifier: see docs/SERVING.md "Precision" (test macro-F1 and probability
differences, bf16 vs fp32).

When the folder holds `calibration.json` (written by `ulmfit fit`, recipes/posthoc.py), the class
probabilities are temperature-scaled and the labels come from the tuned decision rule
(train/calibration.py `apply`), in `predict`, `predict_proba` and `evaluate` alike.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.errors import UlmfitError
from ulmfit.recipes import model_dir, registry
from ulmfit.text.tokenize import Tokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.train.calibration import apply, decide, ece
from ulmfit.train.metrics import classification_metrics
from ulmfit.train.precision import check_precision, resolve_precision

# "auto": bf16 encoder arithmetic where the CPU has it natively: 1.9x the bulk throughput of fp32 on
# AVX512-BF16, with test macro-F1 unchanged within noise on the tweets (docs/SERVING.md "Precision");
# "fp32" stays one option away for exact, reproducible numbers (and is what "auto" means elsewhere).
PREDICT_PRECISION = "auto"
# What the steps that BUILD a model folder predict with (calibration, validation reports, ensemble
# weights, a teacher's soft targets): exact fp32, so a folder's artifacts do not depend on the CPU it
# was trained on (and runs that differ by float rounding do not diverge through bf16 rounding).
BUILD_PRECISION = "fp32"


def inference_precision(model: torch.nn.Module | None, precision: str, where: str) -> str:
    """Apply `precision` to a loaded model for inference and return what it resolved to ("fp32" or
    "bf16"). A model without a bf16 inference path (`set_encoder_dtype`) runs fp32 under "auto"; asked
    for "bf16" explicitly, it is refused in one line."""
    resolved = resolve_precision(check_precision(precision))
    if resolved == "fp32":
        return "fp32"
    if not hasattr(model, "set_encoder_dtype"):
        if precision == "bf16":
            raise UlmfitError(f"{where}: bf16 prediction is only available for AWD-LSTM classifiers (ulmfit, "
                              f"distill recipes) in PyTorch; use --precision fp32 or auto")
        return "fp32"
    model.set_encoder_dtype(torch.bfloat16)
    return "bf16"


@dataclass
class Member:
    """One direction's classifier: its text pipeline and its model (forward(ids, lengths) -> logits)."""

    direction: str
    tokenizer: Tokenizer
    vocab: Vocab
    model: torch.nn.Module | None
    precision: str = "fp32"  # what the model computes in: "fp32" or "bf16" (resolved, never "auto")

    @classmethod
    def load(cls, folder: Path, direction: str = "fwd", recipe: str | None = None,
             precision: str = PREDICT_PRECISION) -> "Member":
        """The model of `folder`, loaded by its recipe's registered `load_model` (default: the default
        recipe); a recipe with its own text pipeline (the transformer's) gives its own member.
        precision: "auto", "fp32" or "bf16" (see the module's docstring)."""
        r = registry.get(recipe or registry.default_name())
        if r.load_member is not None:
            member = r.load_member(folder, direction)
            inference_precision(None, precision, f"{folder} (recipe {r.name})")  # fp32, or refused
            return member
        tokenizer, vocab = model_dir.load_text_pipeline(folder)
        model = r.load_model(folder).eval()
        resolved = inference_precision(model, precision, f"{folder} (recipe {r.name})")
        return cls(direction, tokenizer, vocab, model, resolved)

    def predict_proba(self, tokens: list[list[str]], n_classes: int, bs: int = 128) -> np.ndarray:
        """Class probabilities for already tokenized texts, rows in input order."""
        docs = self.vocab.encode_many(tokens)
        if self.direction == "bwd":
            docs = docs.reversed()
        probs = np.zeros((len(tokens), n_classes), dtype=np.float32)
        with torch.inference_mode():
            for batch in ClassificationLoader(docs, None, bs=bs, shuffle=False):
                logits = self.model(batch.ids, batch.lengths)
                probs[batch.index.numpy()] = torch.softmax(logits.float(), -1).numpy()
        return probs


class OnnxMember(Member):
    """A `Member` whose model runs in onnxruntime (models/onnx.py: exported from the folder's PyTorch
    model at load, or read from an exported file); same tokenizer, vocabulary and batching. Covers the
    AWD-LSTM classifier (chunk by chunk) and the transformer classifier (one window pass)."""

    onnx_model: "OnnxChunkModel | OnnxTransformerModel"

    @classmethod
    def load(cls, folder: Path, direction: str = "fwd", recipe: str = "ulmfit", threads: int | None = None,
             data: bytes | None = None, precision: str = PREDICT_PRECISION) -> "OnnxMember":
        from ulmfit.models.onnx import check_exportable, export_model, onnx_model

        if check_precision(precision) == "bf16":
            raise UlmfitError(f"{folder}: the ONNX export computes in fp32; use --precision fp32 or auto with "
                              f"--runtime onnx, or --runtime torch for bf16")
        r = registry.get(recipe or registry.default_name())
        if r.load_member is not None:  # a recipe with its own text pipeline (the transformer's)
            base = r.load_member(folder, direction)
            model, tokenizer, vocab = base.model, base.tokenizer, base.vocab
        else:
            model = r.load_model(folder)
            tokenizer, vocab = model_dir.load_text_pipeline(folder)
        check_exportable(model, f"{folder} (recipe {r.name})")
        if data is None:
            data = export_model(model, {"direction": direction})
        m = cls(direction, tokenizer, vocab, None)
        m.onnx_model = onnx_model(data, threads)
        return m

    def predict_proba(self, tokens: list[list], n_classes: int, bs: int = 128) -> np.ndarray:
        docs = (self.vocab or self.tokenizer).encode_many(tokens)  # a transformer's pipeline has no Vocab
        if self.direction == "bwd":
            docs = docs.reversed()
        probs = np.zeros((len(tokens), n_classes), dtype=np.float32)
        for batch in ClassificationLoader(docs, None, bs=bs, shuffle=False, pad_idx=self.onnx_model.meta["pad_idx"],
                                          max_batch_pieces=getattr(self.onnx_model, "max_batch_pieces", None)):
            logits = self.onnx_model(batch.ids.numpy(), batch.lengths.numpy())
            probs[batch.index.numpy()] = torch.softmax(torch.from_numpy(logits), -1).numpy()
        return probs


RUNTIMES = ("torch", "onnx")


def member_loader(runtime: str = "torch", threads: int | None = None,
                  files: dict[str, str | Path] | None = None,
                  precision: str = PREDICT_PRECISION) -> Callable[[Path, str, str], Member]:
    """How `Classifier` loads each direction: PyTorch, or onnxruntime (exported in memory at load, or
    from `files`, {direction: .onnx path} written by `ulmfit export`; `threads`: its intra-op threads)."""
    check_precision(precision)
    if runtime == "torch":
        return lambda folder, direction, recipe: Member.load(folder, direction, recipe, precision)
    if runtime != "onnx":
        raise UlmfitError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    files = files or {}

    def load_onnx(folder: Path, direction: str, recipe: str) -> Member:
        data = Path(files[direction]).read_bytes() if direction in files else None
        return OnnxMember.load(folder, direction, recipe, threads, data, precision)

    return load_onnx


def proba_by_direction(members: list[Member], texts: Sequence[str], n_classes: int,
                       bs: int = 128) -> dict[str, np.ndarray]:
    """Each member's probabilities; texts are tokenized once per distinct tokenizer config."""
    tokens: dict[str, list[list[str]]] = {}
    out = {}
    for m in members:
        key = json.dumps(asdict(m.tokenizer.config), sort_keys=True)
        if key not in tokens:
            tokens[key] = m.tokenizer.tokenize_many(list(texts))
        out[m.direction] = m.predict_proba(tokens[key], n_classes, bs)
    return out


def average(probs: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> np.ndarray:
    """The mean of the models' probabilities; with `weights` (summing to 1) their weighted sum."""
    if weights is None:
        return np.mean(np.stack(list(probs.values())), axis=0).astype(np.float32)
    return sum(weights[k] * p.astype(np.float64) for k, p in probs.items()).astype(np.float32)


def metrics_by_direction(probs: dict[str, np.ndarray], y_true: np.ndarray, classes: list[str],
                         weights: dict[str, float] | None = None, biases: dict[str, np.ndarray] | None = None) -> dict:
    """The ensemble's metrics, plus each direction's under "by_direction" when there are several: by its
    argmax, or with `biases` by each one's own decision rule (an ensemble's members, as each predicts alone)."""
    metrics = classification_metrics(y_true, average(probs, weights).argmax(1), classes)
    if len(probs) > 1:
        metrics["by_direction"] = {d: classification_metrics(y_true, decide(p, (biases or {}).get(d)), classes)
                                   for d, p in probs.items()}
    return metrics


class Classifier:
    """Predicts labels and class probabilities for raw texts."""

    def __init__(self, folder: str | Path, runtime: str = "torch", *, threads: int | None = None,
                 onnx_files: dict[str, str | Path] | None = None, precision: str = PREDICT_PRECISION):
        """runtime: "torch" (default) or "onnx" (onnxruntime, the `serve` extra; see `member_loader`).
        precision: "auto" (default), "fp32" (exact) or "bf16" (see the module's docstring)."""
        self.folder = Path(folder)
        self.runtime = runtime
        loader = member_loader(runtime, threads, onnx_files, precision)
        self.meta = model_dir.classifier_marker(self.folder)
        self.classes: list[str] = list(self.meta["classes"])
        self.weights: dict[str, float] | None = None
        # calibration.json is read after the models, so that classes disagreeing with the head are reported as such
        cal_path = self.folder / "calibration.json"
        if self.meta["kind"] == "ensemble":  # recipes/ensemble.py: member folders copied inside
            self.parts = {e["path"]: Classifier(self.folder / e["path"], runtime, threads=threads, precision=precision)
                          for e in self.meta["members"]}
            self.weights = {e["path"]: float(e["weight"]) for e in self.meta["members"]}
            self.directions = list(self.parts)
            self.members = [m for part in self.parts.values() for m in part.members]
            first = next(iter(self.parts.values()))
            self.tokenizer, self.vocab, self.model = first.tokenizer, first.vocab, first.model
            self.calibration = _read_calibration(cal_path, len(self.classes))
            return
        self.directions: list[str] = list(self.meta.get("directions") or [self.meta.get("direction", "fwd")])
        recipe = self.meta.get("recipe") or registry.default_name()  # folders from before recipes were recorded
        self.recipe = recipe
        self.members = [loader(model_dir.direction_folder(self.folder, self.directions[0], d), d, recipe)
                        for d in self.directions]
        first = self.members[0]
        self.tokenizer, self.vocab, self.model = first.tokenizer, first.vocab, first.model
        self.calibration = _read_calibration(cal_path, len(self.classes))

    @property
    def precision(self) -> str:
        """What the models compute in: "fp32", "bf16", or e.g. "bf16+fp32" for an ensemble that mixes them."""
        return "+".join(sorted({getattr(m, "precision", "fp32") for m in self.members}, reverse=True))

    def predict_proba_by_direction(self, texts: Sequence[str], bs: int = 128,
                                   every_member: bool = False) -> dict[str, np.ndarray]:
        """{direction: probabilities} of every model in the folder (one entry unless trained with both).
        An ensemble's members of weight 0 (its weight rule kept others alone) are not run unless
        `every_member` (evaluate reports each member): they cannot change a prediction."""
        texts = ["" if t is None else str(t) for t in texts]
        if self.weights is not None:  # an ensemble: each member folder's probabilities, columns in our order
            return {k: part.predict_proba(texts, bs)[:, [part.classes.index(c) for c in self.classes]]
                    for k, part in self.parts.items() if every_member or self.weights[k] > 0}
        return proba_by_direction(self.members, texts, len(self.classes), bs)

    def predict_proba_raw(self, texts: Sequence[str], bs: int = 128) -> np.ndarray:
        """The model's own probabilities (before temperature scaling): the average over the directions
        when the folder holds a forward and a backward model (an ensemble: its weighted members')."""
        return average(self.predict_proba_by_direction(texts, bs), self.weights)

    def predict_proba(self, texts: Sequence[str], bs: int = 128) -> np.ndarray:
        """Calibrated class probabilities, shape [len(texts), n_classes], columns in `self.classes` order."""
        return apply(self.predict_proba_raw(texts, bs), self.calibration)[0]

    def predict_with_proba(self, texts: Sequence[str], bs: int = 128) -> tuple[list[str], np.ndarray]:
        """(labels by the folder's decision rule, calibrated probabilities). A tuned rule can pick a
        class whose probability is not the largest: it trades a little of the large classes' recall
        for the small ones' (see the model's report.md)."""
        probs, pred = apply(self.predict_proba_raw(texts, bs), self.calibration)
        return [self.classes[i] for i in pred], probs

    def bias_in(self, classes: Sequence[str]) -> np.ndarray:
        """The folder's decision rule as the bias on its calibrated probabilities (`label_ids`), in the
        order of `classes` (zeros: its argmax). An ensemble weights its members' rules with this."""
        return bias_in(self.calibration, self.classes, classes)

    def label_ids(self, probs: np.ndarray) -> np.ndarray:
        """Class indices of calibrated probabilities (`predict_proba`'s) by the folder's decision rule."""
        return decide(probs, (self.calibration or {}).get("bias"))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return self.predict_with_proba(texts)[0]

    def evaluate(self, texts: Sequence[str], labels: Sequence[str], source: str = "data") -> dict:
        """Metrics of the (averaged) model; with two directions also each one's, under "by_direction"."""
        labels = [str(l).strip() for l in labels]
        unseen = sorted(set(labels) - set(self.classes))
        if unseen:
            raise UlmfitError(f"{source}: labels {unseen[:5]} were never seen in training (model classes: "
                              f"{self.classes}); map them to known classes or drop those rows")
        index = {c: i for i, c in enumerate(self.classes)}
        y_true = np.array([index[l] for l in labels], dtype=np.int64)
        probs = self.predict_proba_by_direction(texts, every_member=True)
        rules = {k: part.bias_in(self.classes) for k, part in self.parts.items()} if self.weights is not None else None
        metrics = metrics_by_direction(probs, y_true, self.classes, self.weights, rules)
        if self.calibration:
            raw = average(probs, self.weights)
            cal, pred = apply(raw, self.calibration)
            before = {k: metrics[k] for k in ("accuracy", "macro_f1")}
            before["per_class_f1"] = {c: m["f1"] for c, m in metrics["per_class"].items()}
            metrics.update(classification_metrics(y_true, pred, self.classes))
            metrics.update(argmax=before, ece_before=ece(raw, y_true), ece_after=ece(cal, y_true))
        return metrics


def bias_in(calibration: dict | None, own: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """A calibration.json's decision bias (on the calibrated probabilities; none: zeros, the argmax) for
    a model whose classes are `own`, in the order of `classes`."""
    bias = (calibration or {}).get("bias")
    if bias is None:
        return np.zeros(len(classes))
    return np.array([float(bias[list(own).index(c)]) for c in classes])


def _read_calibration(path: Path, n_classes: int) -> dict | None:
    """The folder's temperature and decision rule (None: no file, plain probabilities and argmax)."""
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        ok = float(d["temperature"]) > 0 and (d["bias"] is None or len([float(b) for b in d["bias"]]) == n_classes)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UlmfitError(f"{path}: unreadable ({type(e).__name__}: {e}); delete it to predict with the plain "
                          f"argmax, or retrain the model") from e
    if not ok:
        raise UlmfitError(f"{path}: needs a temperature > 0 and one bias per class ({n_classes}) or null; "
                          f"delete the file to predict with the plain argmax, or retrain the model")
    shift = d.get("calibration_bias")  # BCTS's class shift c (train/calibration.py fit_bcts); absent in older files: none
    if shift is not None:
        try:
            ok = len(shift) == n_classes and all(np.isfinite(float(x)) for x in shift) and not isinstance(shift, str)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UlmfitError(f"{path}: field calibration_bias must be null or a list of {n_classes} finite numbers "
                              f"(one per class), got {str(shift)[:60]!r}; delete the file to predict with the plain "
                              f"argmax, or retrain the model")
    return d


def load(folder: str | Path, runtime: str = "torch", **kw) -> Classifier:
    """`ulmfit.load(DIR)`; `runtime="onnx"` runs the same models in onnxruntime (parity 1e-4, tested)."""
    return Classifier(folder, runtime, **kw)
