"""The ULMFiT recipe on a transformer backbone (`ulmfit fit --backbone minilm` or a Hugging Face folder;
registered as recipe "transformer" by recipes/transformer_config.py, settings in its `transformer` section).

Same two phases as recipes/ulmfit.py, through the same loop (`train/loop.py: run_phase`):

1. target-task masked-word fine-tuning of the encoder (ULMFiT §3.2 with BERT's objective) on all the
   text at hand: the training texts plus the unlabelled ones (`--unlabeled`, and the unsampled rows
   of a low-resource run), at most `mlm_max_docs` of them; `mlm_epochs=0` skips it;
2. the classifier (models/transformer.py: TransformerClassifier): discriminative rates over
   [embeddings, block groups, head] (factor `lr_factor`), gradual unfreezing (one stage per `lrs`
   entry), the section's schedule, class weights, selection metric and early stopping; checkpoints
   for exact resume are the loop's.

With `objective="siatl"` (`--recipe siatl --backbone ...`) phase 1 is skipped and the classifier
trains with SiATL's auxiliary masked-word loss (Chronopoulou et al. 2019 §2: task loss + gamma * LM
loss, gamma decaying per epoch from `gamma_start` to `gamma_end`); gradual unfreezing stands in for
its sequential unfreezing, and the MLM head trains with the classifier's head.

The model folder (marker recipe "transformer"):
```
DIR/classifier_config.json       {"backbone": {"kind": "transformer", "config": the encoder's HF config +
                                 how it reads, "pipeline": the whole WordPiece tokenizer as JSON},
                                 "head": ClassifierConfig, "pooling", "train_mlm_head", "source"}
DIR/classifier.safetensors       the whole classifier (encoder, MLM head, classification head)
```
Nothing else is needed to reload it: no model package, no hub, no tokenizer files.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json
from ulmfit.models.awd_lstm import CLASSIFIER_DROPOUTS
from ulmfit.models.backbone import get_backbone
from ulmfit.models.classifier import ClassifierConfig
from ulmfit.models.transformer import (PREDICT_BATCH_PIECES, LMModel, TransformerClassifier, TransformerConfig,
                                       WordPieceText, import_transformers, load_pretrained_backbone, param_count, read_json,
                                       resolve_transformer, window_note)
from ulmfit.recipes.registry import Run
from ulmfit.recipes.toolbox import Log, seed_all
from ulmfit.recipes.transformer_config import TransformerTrainConfig
from ulmfit.recipes.ulmfit import gradual_unfreezing
from ulmfit.recipes.model_dir import load_weights_into
from ulmfit.train.checkpoint import save_weights
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
from ulmfit.train.metrics import classification_metrics
from ulmfit.train.mlm_task import MaskedLMTask
from ulmfit.train.optim import make_optimizer, param_groups
from ulmfit.train.siatl_schedule import gamma_at
from ulmfit.train.tasks import ClassifierTask, imbalance_loss


def check_section(t: TransformerTrainConfig) -> Path:
    """Before any data is read: the extra is installed and the backbone is a model folder."""
    import_transformers()
    return resolve_transformer(t.backbone)


def reading_config(t: TransformerTrainConfig) -> TransformerConfig:
    return TransformerConfig(window=t.window, overlap=t.overlap, blocks_per_group=t.blocks_per_group, mlm_prob=t.mlm_prob)


def fit_recipe(run: Run) -> dict:
    """Both phases into `run.out`; returns the validation metrics of the selected classifier."""
    cfg, data, out, log = run.configs["fwd"], run.data, run.out, run.log
    t = cfg.transformer
    source = check_section(t)
    seed_all(cfg.seed)
    backbone, text = load_pretrained_backbone(source, reading_config(t))
    log(f"transformer backbone: {source} ({param_count(backbone.bert):.1f}M parameters, vocabulary {text.vocab_size:,} "
        f"word pieces, window {t.window}, overlap {t.overlap}, pooling {t.pooling})")
    t0 = time.perf_counter()
    train_tok = text.tokenize_many(data.train.texts)
    valid_tok = text.tokenize_many(data.valid.texts)
    log(f"tokenized {len(train_tok) + len(valid_tok):,} labelled documents in {time.perf_counter() - t0:.1f}s")
    note = window_note([len(x) for x in train_tok + valid_tok], backbone.cfg)
    if note:
        log(note)
    if t.objective == "ulmfit" and t.mlm_epochs > 0:
        finetune_mlm(backbone, text, train_tok, data.unlabeled, out, cfg, run.resume, log)
    note = unlabeled_note(len(data.unlabeled), t)
    if note:
        log(note)
    model = classifier_on(backbone, len(data.classes), t)
    metrics = train_transformer_classifier(model, text, train_tok, valid_tok, data, out, cfg, run.resume, log)
    save_transformer_classifier(out, model, text, str(source))
    return metrics


def unlabeled_note(n_unlabeled: int, t) -> str | None:
    """A log line when unlabelled text was given but this run does not read it (the masked-word step is
    off by default, or the SiATL objective), and the command that puts it to use: distillation over it."""
    if not n_unlabeled or (t.objective == "ulmfit" and t.mlm_epochs > 0):
        return None
    why = "the SiATL objective reads the labelled texts only" if t.objective == "siatl" else \
        "the masked-word step is off by default (transformer.mlm_epochs=0: it measured no gain)"
    return (f"unlabelled text: {n_unlabeled:,} texts not read by this model ({why}). Its student reads them: `fit "
            f"--student on` (the default with few labels: recipes/few_labels.py) distils the model into the fast "
            f"AWD-LSTM over them and keeps the validated ensemble of the two; by hand, `ulmfit distill --teacher MODEL "
            f"...` then `ulmfit ensemble MODEL STUDENT`")


def finetune_mlm(backbone, text: WordPieceText, train_tok: list[list[int]], unlabeled: list[str], out: Path,
                 cfg, resume: bool, log: Log) -> dict:
    """Phase 1: masked-word fine-tuning on the training texts + unlabelled texts (a seeded sample of
    at most `mlm_max_docs`), `lm.valid_frac` of them held out for the validation loss."""
    t = cfg.transformer
    rng = np.random.default_rng(cfg.seed)
    extra = list(unlabeled)
    if t.mlm_max_docs is not None and len(train_tok) + len(extra) > t.mlm_max_docs:
        keep = max(t.mlm_max_docs - len(train_tok), 0)
        extra = [extra[i] for i in np.sort(rng.permutation(len(extra))[:keep])]
        log(f"masked-word LM: {len(train_tok) + len(unlabeled):,} documents at hand, a seeded sample of "
            f"{t.mlm_max_docs:,} used (transformer.mlm_max_docs)")
    docs = text.encode_many(train_tok + text.tokenize_many(extra))
    if len(docs) < 2:
        raise UlmfitError("masked-word LM fine-tuning needs at least 2 documents; set transformer.mlm_epochs=0")
    order = rng.permutation(len(docs))
    n_valid = min(max(1, int(len(docs) * cfg.lm.valid_frac)), len(docs) - 1)
    valid_docs, train_docs = docs.subset(np.sort(order[:n_valid])), docs.subset(np.sort(order[n_valid:]))
    train_loader = ClassificationLoader(train_docs, None, bs=t.mlm_bs, shuffle=True, seed=cfg.seed, pad_idx=text.pad_id)
    valid_loader = ClassificationLoader(valid_docs, None, bs=t.mlm_bs * 2, shuffle=False, pad_idx=text.pad_id,
                                        max_batch_pieces=PREDICT_BATCH_PIECES)
    lm = LMModel(backbone)
    groups = lm.layer_groups()
    opt = make_optimizer(param_groups(groups, t.mlm_lr, factor=t.lr_factor, weight_decay=t.wd), kind=cfg.optimizer)
    loop_cfg = LoopConfig(monitor="valid_loss", patience=cfg.lm.patience, seed=cfg.seed, precision=cfg.precision,
                          lr_factor=t.lr_factor, clip=t.clip)
    log(f"masked-word LM: {train_docs.n_tokens:,} training word pieces ({len(train_docs):,} documents), "
        f"{valid_docs.n_tokens:,} validation; {t.mlm_epochs} epoch(s) at top rate {t.mlm_lr:g}")
    before = MaskedLMTask(cfg.seed).evaluate(lm, valid_loader)
    stages = [Stage("all", t.mlm_epochs, t.mlm_lr, freeze_to=0, schedule=cfg.lm.schedule, can_stop_early=True)]
    result = run_phase(lm, MaskedLMTask(cfg.seed), opt, groups, stages, train_loader, valid_loader,
                       PhaseFiles(out, "lm"), loop_cfg, resume=resume)
    lm.zero_grad(set_to_none=True)  # nothing of this phase's gradients reaches the classifier's
    log(f"masked-word LM done: validation loss {before['valid_loss']:.3f} -> {result.best_value:.3f} "
        f"(masked-word accuracy {before['accuracy']:.3f} -> {result.history[-1]['accuracy']:.3f} at the last epoch)")
    return {"before": before, "best_valid_loss": result.best_value}


def classifier_on(backbone, n_classes: int, t: TransformerTrainConfig) -> TransformerClassifier:
    """The classification head (the AWD-LSTM classifier's blocks and dropouts) on the backbone."""
    head = ClassifierConfig(n_classes=n_classes, lin_sizes=tuple(t.lin_sizes),
                            ps=(CLASSIFIER_DROPOUTS["output_p"] * t.drop_mult,) + (0.1,) * len(t.lin_sizes))
    return TransformerClassifier(backbone, head, pooling=t.pooling, train_mlm_head=t.objective == "siatl")


class AuxMLMClassifierTask(ClassifierTask):
    """SiATL's objective on a transformer: cross-entropy + gamma(epoch) * masked-word loss on the same
    batch; gamma decays per epoch as `siatl_schedule.gamma_at`. The epoch is read from the training
    loader (the loop sets it before every epoch, also when resuming), so the task keeps no state."""

    def __init__(self, class_names, class_loss, loader: ClassificationLoader, start: float, end: float,
                 n_epochs: int):
        super().__init__(class_names, class_loss)
        self.loader, self.start, self.end, self.n_epochs = loader, start, end, n_epochs

    def loss(self, model, batch) -> torch.Tensor:
        task = self.class_loss(model(batch.ids, batch.lengths), batch.labels)
        gamma = gamma_at(self.loader.epoch + 1, self.start, self.end, self.n_epochs)
        return task + gamma * model.backbone.lm_loss(batch.ids, batch.lengths) if gamma else task


def last_stage_at_least(stages: list[Stage], steps_per_epoch: int, min_steps: int) -> list[Stage]:
    """The stages with the last one lengthened to at least `min_steps` optimizer steps (whole epochs),
    never shortened: with few labels an epoch is a few dozen steps (transformer_config: min_last_stage_steps)."""
    last = stages[-1]
    epochs = max(last.epochs, math.ceil(min_steps / max(steps_per_epoch, 1)))
    return stages[:-1] + [replace(last, epochs=epochs)]


def train_transformer_classifier(model: TransformerClassifier, text: WordPieceText, train_tok, valid_tok,
                                 data, out: Path, cfg, resume: bool, log: Log) -> dict:
    """Phase 2: gradual unfreezing with discriminative rates; best epoch by `metric` on validation."""
    t = cfg.transformer
    seed_all(cfg.seed)
    train_loader = ClassificationLoader(text.encode_many(train_tok), data.train.labels, bs=t.bs, shuffle=True,
                                        seed=cfg.seed, pad_idx=text.pad_id, min_batches=t.min_steps_per_epoch)
    valid_loader = ClassificationLoader(text.encode_many(valid_tok), data.valid.labels, bs=t.bs * 4, shuffle=False,
                                        pad_idx=text.pad_id, max_batch_pieces=PREDICT_BATCH_PIECES)
    class_loss = imbalance_loss(t.class_weights, data.train.labels, len(data.classes), cfg.imbalance)
    if t.objective == "siatl":
        task = AuxMLMClassifierTask(data.classes, class_loss, train_loader, t.gamma_start, t.gamma_end, t.gamma_epochs)
    else:
        task = ClassifierTask(data.classes, class_loss)
    groups = model.layer_groups()
    opt = make_optimizer(param_groups(groups, t.lrs[0], factor=t.lr_factor, weight_decay=t.wd), kind=cfg.optimizer)
    loop_cfg = LoopConfig(monitor=t.metric, patience=t.patience, seed=cfg.seed, precision=cfg.precision,
                          lr_factor=t.lr_factor, clip=t.clip)
    stages = last_stage_at_least(gradual_unfreezing(t), len(train_loader), t.min_last_stage_steps)
    if stages[-1].epochs > t.epochs[-1]:
        log(f"few labels: the last stage runs {stages[-1].epochs} epochs instead of {t.epochs[-1]}, at least "
            f"{t.min_last_stage_steps} steps of {len(train_loader)} an epoch (transformer.min_last_stage_steps; 0 turns it off)")
    log(f"transformer classifier ({t.objective}): {len(data.train.texts):,} training / {len(data.valid.texts):,} "
        f"validation documents, classes {data.classes}; {len(groups)} layer groups; stages "
        f"{', '.join(f'{s.name} {s.epochs}x{s.lr:g}' for s in stages)}; selecting on {t.metric}")
    result = run_phase(model, task, opt, groups, stages, train_loader, valid_loader, PhaseFiles(out, "classifier"),
                       loop_cfg, resume=resume)
    probs = task.predict(model, valid_loader)
    metrics = classification_metrics(data.valid.labels, probs.argmax(1), data.classes)
    log(f"classifier done: best {t.metric} {result.best_value:.4f} (epoch {result.best_epoch}); "
        f"validation accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    return metrics


# ---------------------------------------------------------------------- the model folder

def save_transformer_classifier(folder: Path, model: TransformerClassifier, text: WordPieceText, source: str) -> None:
    spec = get_backbone(model.backbone.kind)
    atomic_write_json(folder / "classifier_config.json", {
        "backbone": {"kind": spec.kind, "config": spec.config(model.backbone), "pipeline": spec.pipeline_to_json(text)},
        "head": model.cfg.to_dict(), "pooling": model.pooling, "train_mlm_head": model.train_mlm_head, "source": source})
    save_weights(model.state_dict(), folder / "classifier.safetensors")


def load_transformer_classifier(folder: Path) -> tuple[TransformerClassifier, WordPieceText]:
    """Rebuild the classifier from the folder alone (offline: no hub, no model package needed)."""
    d = read_json(Path(folder) / "classifier_config.json")
    if "backbone" not in d:
        raise UlmfitError(f"{folder}: classifier_config.json holds no transformer backbone; retrain or restore the folder")
    spec = get_backbone(d["backbone"]["kind"])
    backbone = spec.from_config(d["backbone"]["config"])
    text = spec.pipeline_from_json(d["backbone"]["pipeline"])
    model = TransformerClassifier(backbone, ClassifierConfig.from_dict(d["head"]), pooling=d.get("pooling", "concat"),
                                  train_mlm_head=d.get("train_mlm_head", False))
    return load_weights_into(model, Path(folder) / "classifier.safetensors", "classifier_config.json").eval(), text


def load_model(folder: Path) -> TransformerClassifier:
    return load_transformer_classifier(folder)[0]


def load_member(folder: Path, direction: str = "fwd") -> "TransformerMember":
    return TransformerMember.load(folder, direction)


@dataclass
class TransformerMember:
    """A transformer classifier for `recipes/predictor.py` (the face of its `Member`)."""

    direction: str
    tokenizer: WordPieceText  # tokenize_many(texts) -> word-piece ids; .config identifies it
    vocab: None
    model: TransformerClassifier

    @classmethod
    def load(cls, folder: Path, direction: str = "fwd") -> "TransformerMember":
        model, text = load_transformer_classifier(folder)
        return cls(direction, text, None, model)

    def predict_proba(self, tokens: list[list[int]], n_classes: int, bs: int = 128) -> np.ndarray:
        docs = self.tokenizer.encode_many(tokens)
        probs = np.zeros((len(tokens), n_classes), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            for batch in ClassificationLoader(docs, None, bs=bs, shuffle=False, pad_idx=self.tokenizer.pad_id,
                                              max_batch_pieces=PREDICT_BATCH_PIECES):
                probs[batch.index.numpy()] = torch.softmax(self.model(batch.ids, batch.lengths).float(), -1).numpy()
        return probs
