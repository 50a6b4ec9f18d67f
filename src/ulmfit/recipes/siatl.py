"""The SiATL recipe (Chronopoulou, Baziotis & Potamianos, NAACL 2019, arXiv:1902.10547): transfer a
pretrained language model to a classifier in one training run.

Every epoch e (1-based):
  - the trainable parts follow sequential unfreezing: the new layers alone, then the pretrained
    LSTM from `unfreeze_lstm_epoch`, then the embeddings from `unfreeze_embedding_epoch`;
  - each batch's loss is  task cross-entropy + gamma_e * LM cross-entropy on the same documents
    (+ gamma_e * the LM loss of one batch of unlabelled target text, when given), gamma_e decaying
    exponentially from gamma_start to gamma_end;
  - one optimizer steps the pretrained part (Adam by default; SGD/ASGD as the paper), Adam the new one,
    each clipped separately;
  - validation, one JSON line in `out/history.jsonl`, best weights kept by `cfg.metric`, and an
    epoch checkpoint in `out/checkpoints/` from which `resume=True` continues.

Randomness is re-seeded from (seed, epoch) at the start of every epoch, and the loaders' orders
depend on (seed, epoch) only, so a resumed run repeats an uninterrupted one exactly.

Files written into `out`: siatl.safetensors + siatl_model.json (the model, see `load_siatl_model`),
history.jsonl (appended), checkpoints/siatl-last.safetensors and checkpoints/siatl-best.safetensors.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.data.lm_loader import LMLoader
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json
from ulmfit.models.awd_lstm import CLASSIFIER_DROPOUTS, AWDLSTMConfig, detach_state
from ulmfit.models.siatl import SiatlClassifier, SiatlHeadConfig, next_token_loss
from ulmfit.recipes.config import ImbalanceConfig
from ulmfit.recipes.prepare import Labelled
from ulmfit.recipes.siatl_config import SiatlConfig
from ulmfit.recipes.toolbox import LMResult, Log, quiet, seed_all
from ulmfit.text.token_docs import TokenDocs
from ulmfit.train.checkpoint import save_weights
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, autocast, run_phase
from ulmfit.train.precision import training_precision
from ulmfit.train.metrics import classification_metrics
from ulmfit.train.siatl_optim import SiatlStepper, make_optimizers, set_trainable
from ulmfit.train.siatl_schedule import PARTS, gamma_at, trainable_parts
from ulmfit.train.tasks import ClassLoss, imbalance_loss, score_probs


PHASE = "siatl"
MODEL_FILE, CONFIG_FILE = "siatl.safetensors", "siatl_model.json"


def build_model(base: LMResult, n_classes: int, cfg: SiatlConfig) -> SiatlClassifier:
    """The pretrained LM (already on the target vocabulary) with the classifier's dropouts
    (fastai's, times cfg.drop_mult, as the ulmfit recipe) and new task layers."""
    enc_cfg = replace(base.config, drop_mult=cfg.drop_mult, **CLASSIFIER_DROPOUTS)
    head_cfg = SiatlHeadConfig(n_classes=n_classes, task_hidden=cfg.task_hidden, head_p=cfg.head_p,
                               max_len=cfg.max_doc_tokens)
    return SiatlClassifier.from_language_model(base.lm, head_cfg, enc_cfg)


def _lm_stream(loader: LMLoader, epoch: int):
    """Endless (x, y, fresh) LM batches for one epoch: the loader's order for this epoch, then new
    orders if the epoch outlasts it. Depends on (loader seed, epoch) only, so resuming at an epoch
    boundary replays it; `fresh` marks the start of a pass (reset the carried LSTM state)."""
    for cycle in range(1_000_000):
        loader.set_epoch(epoch * 1_000_000 + cycle)
        for i, (x, y) in enumerate(loader):
            yield x, y, i == 0


@torch.no_grad()
def evaluate(model: SiatlClassifier, loader: ClassificationLoader, classes: list[str],
             precision: str = "auto") -> tuple[dict, np.ndarray]:
    """(metrics, class probabilities in the loader's document order): valid_loss (task
    cross-entropy), valid_lm_loss (next-token cross-entropy per token), accuracy, macro/weighted F1,
    macro_f1_tuned (tasks.score_probs)."""
    model.eval()
    probs = np.zeros((len(loader.docs), len(classes)), dtype=np.float32)
    lm_sum, lm_n = 0.0, 0
    for batch in loader:
        with autocast(precision, batch.ids.device.type):
            logits, lm_logits = model.forward_with_lm(batch.ids, batch.lengths)
            n = int((batch.lengths.clamp(max=lm_logits.size(1)) - 1).sum())
            lm_sum += float(next_token_loss(lm_logits, batch.ids, batch.lengths)) * n
        lm_n += n
        probs[batch.index.numpy()] = torch.softmax(logits.float(), -1).cpu().numpy()
    return {**score_probs(probs, loader.labels, classes), "valid_lm_loss": lm_sum / max(lm_n, 1)}, probs


class SiatlTask:
    """The loop's task for SiATL: each batch's loss is the task cross-entropy + gamma_e * (the
    next-token loss on the same documents + one unlabelled LM batch, once the LSTM trains).
    `start_epoch` sets gamma_e and the unlabelled stream; `epoch_record` logs the loss parts."""

    def __init__(self, cfg: SiatlConfig, classes: list[str], lm_loader: LMLoader | None, precision: str,
                 class_loss: ClassLoss | None = None, keep_probs: bool = False):
        self.cfg, self.classes, self.lm_loader, self.precision = cfg, classes, lm_loader, precision
        self.class_loss = class_loss or ClassLoss()  # the task loss (weighted or logit-adjusted; default plain)
        self.keep_probs = keep_probs  # evaluate also returns "probs" (cross-validated selection, tasks.ClassifierTask)

    def start_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        self.active = trainable_parts(epoch, cfg.unfreeze_lstm_epoch, cfg.unfreeze_embedding_epoch)
        self.gamma = gamma_at(epoch, cfg.gamma_start, cfg.gamma_end, cfg.gamma_epochs)
        self.use_lm = self.gamma > 0  # before the LSTM unfreezes the LM loss trains nothing, but it is logged
        # The unlabelled LM batches only start when they can reach trainable weights (the LSTM).
        self.stream = (_lm_stream(self.lm_loader, epoch)
                       if (self.lm_loader and self.use_lm and "lstm" in self.active) else None)
        self.lm_state = None
        self.sums = {"train_task_loss": 0.0, "train_lm_loss": 0.0, "train_unlabeled_lm_loss": 0.0}
        self.n_batches = 0

    def loss(self, model: SiatlClassifier, batch) -> torch.Tensor:
        if self.use_lm:
            logits, lm_logits = model.forward_with_lm(batch.ids, batch.lengths)
            lm_loss = next_token_loss(lm_logits, batch.ids, batch.lengths)
        else:
            logits, lm_loss = model(batch.ids, batch.lengths), torch.zeros(())
        task_loss = self.class_loss(logits, batch.labels)
        unl_loss = torch.zeros(())
        if self.stream is not None:
            x, y, fresh = next(self.stream)  # the LM loader's batch, moved to the model's device
            x, y = x.to(batch.ids.device), y.to(batch.ids.device)
            ulogits, self.lm_state = model.language_model(x, None if fresh else detach_state(self.lm_state))
            unl_loss = F.cross_entropy(ulogits.reshape(-1, ulogits.size(-1)).float(), y.reshape(-1))
        for key, value in (("train_task_loss", task_loss), ("train_lm_loss", lm_loss),
                           ("train_unlabeled_lm_loss", unl_loss)):
            self.sums[key] += float(value.detach())
        self.n_batches += 1
        return task_loss + self.gamma * (lm_loss + unl_loss)

    def epoch_record(self) -> dict:
        n = max(self.n_batches, 1)
        return {"stage": "+".join(self.active), "gamma": round(self.gamma, 6),
                **{k: v / n for k, v in self.sums.items() if k != "train_unlabeled_lm_loss" or self.stream}}

    def evaluate(self, model: SiatlClassifier, loader: ClassificationLoader) -> dict:
        metrics, probs = evaluate(model, loader, self.classes, self.precision)
        if self.keep_probs:
            metrics["probs"] = np.round(probs.astype(np.float64), 6).tolist()
        return metrics


class _Progress:
    """The recipe's messages, as loop callbacks."""

    def __init__(self, cfg: SiatlConfig, log: Log, what: str = "siatl"):
        self.cfg, self.log, self.what = cfg, log, what

    def on_resume(self, result) -> None:
        if result.resumed_meta != asdict(self.cfg):
            self.log("siatl: note: the siatl config differs from the interrupted run's; the result will not match it")
        done = result.history[-1]["epoch"] if result.history else 0
        self.log(f"siatl: resuming after epoch {done}" + (" (it had stopped early)" if result.stopped else ""))

    def on_epoch_end(self, r: dict) -> None:
        cfg = self.cfg
        valid = f"valid {cfg.metric} {r[cfg.metric]:.4f}" if cfg.metric in r else "nothing held out"
        self.log(f"{self.what} epoch {r['epoch']}/{cfg.epochs} [{r['stage']}] gamma {r['gamma']:.3f}: train loss "
                 f"{r['train_loss']:.3f} (task {r['train_task_loss']:.3f}, LM {r['train_lm_loss']:.3f}); "
                 f"{valid}{' *' if r['best'] else ''} ({r['seconds']:.0f}s)")

    def on_stop(self, r: dict) -> None:
        self.log(f"siatl: no better {self.cfg.metric} for {self.cfg.patience} epochs; stopping early")


def train_siatl(base: LMResult, train: Labelled, valid: Labelled, classes: list[str], out: Path,
                cfg: SiatlConfig, *, unlabeled_docs: TokenDocs | None = None, seed: int = 0,
                precision: str = "auto", resume: bool = False, train_tokens: list[list[str]] | None = None,
                imbalance=None, log: Log = quiet) -> tuple[nn.Module, dict]:
    """Train a SiATL classifier on `base` (an LMResult: the pretrained LM mapped onto the target
    vocabulary, or a random one), select it on `valid` by `cfg.metric`, save it into `out` and
    return (best model in eval mode, its validation metrics from `classification_metrics`).
    The epochs run in train/loop.py `run_phase`: one stage of `cfg.epochs` epochs numbered from 1."""
    out = Path(out)
    cfg = cfg.resolved(pretrained=True)  # "auto" values left by a direct call: the pretrained-LM ones
    _check_inputs(train, valid, classes)
    training_precision(precision)  # reject a bad precision before any work
    out.mkdir(parents=True, exist_ok=True)
    if train_tokens is None:
        train_tokens = base.tokenizer.tokenize_many(train.texts)
    valid_tokens = base.tokenizer.tokenize_many(valid.texts)
    model, result, probs = _siatl_phase(base, train_tokens, train.labels, valid_tokens, valid.labels, classes, cfg,
                                        PhaseFiles(out, PHASE), unlabeled_docs=unlabeled_docs, seed=seed,
                                        precision=precision, resume=resume, imbalance=imbalance, log=log)
    metrics = classification_metrics(valid.labels, probs.argmax(1), classes)
    save_siatl_model(out, model)
    log(f"siatl done: best {cfg.metric} {result.best_value if result.best_value is not None else float('nan'):.4f} "
        f"(epoch {result.best_epoch}); validation accuracy "
        f"{metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    return model, metrics


def cv_siatl(base: LMResult, train: Labelled, valid: Labelled, classes: list[str], out: Path, cfg: SiatlConfig, *,
             train_tokens: list[list[str]], unlabeled_docs: TokenDocs | None = None, seed: int = 0,
             precision: str = "auto", resume: bool = False, imbalance=None, log: Log = quiet) -> dict:
    """SiATL with cross-validated selection (recipes/selection.py; `siatl.cv=on`): per fold a whole
    SiATL run (its language-model term trains with the classifier, so nothing is shared between
    folds), the epoch by the mean of the folds' curves, a refit on all rows keeping that epoch,
    saved. Returns the out-of-fold metrics."""
    from ulmfit.recipes.selection import cross_validate

    out = Path(out)
    cfg = cfg.resolved(pretrained=True)
    _check_inputs(train, valid, classes)
    out.mkdir(parents=True, exist_ok=True)
    tokens = list(train_tokens) + base.tokenizer.tokenize_many(valid.texts)
    labels = np.concatenate([train.labels, valid.labels])
    common = dict(unlabeled_docs=unlabeled_docs, seed=seed, precision=precision, resume=resume, imbalance=imbalance)

    def fit_fold(f, tr, held, files):
        return _siatl_phase(base, [tokens[i] for i in tr], labels[tr], [tokens[i] for i in held], labels[held],
                            classes, cfg, files, patience=None, keep_probs=True, log=quiet, **common)[1]

    def refit(epoch):
        model, _, _ = _siatl_phase(base, tokens, labels, None, None, classes, cfg, PhaseFiles(out, PHASE),
                                   select_epoch=epoch, log=log, **common)
        save_siatl_model(out, model)

    return cross_validate(out, labels, classes, folds=cfg.cv_folds, seed=seed, metric=cfg.metric, fit_fold=fit_fold,
                          refit=refit, resume=resume, log=log, what="siatl" + _unlabeled_note(unlabeled_docs, cfg),
                          pooled=(len(train.labels), len(valid.labels)), switch="siatl.cv")


def _unlabeled_note(unlabeled_docs: TokenDocs | None, cfg: SiatlConfig) -> str:
    use = unlabeled_docs is not None and cfg.unlabeled_lm and unlabeled_docs.n_tokens > 2
    return f"; LM term also on {unlabeled_docs.n_tokens:,} unlabelled tokens" if use else ""


def _siatl_phase(base: LMResult, train_tokens, train_labels: np.ndarray, valid_tokens, valid_labels, classes: list[str],
                 cfg: SiatlConfig, files: PhaseFiles, *, unlabeled_docs: TokenDocs | None, seed: int, precision: str,
                 resume: bool, imbalance, log: Log, patience: int | None | str = "cfg", select_epoch: int | None = None,
                 keep_probs: bool = False) -> tuple[SiatlClassifier, object, np.ndarray | None]:
    """One SiATL phase through `run_phase`, shared by the plain fit, the folds of cross-validated
    selection and its refit: (the model with the kept weights, in eval mode, all parts trainable;
    the phase's result; its validation probabilities, None when `valid_tokens` is None, i.e. a refit
    on all rows keeping epoch `select_epoch`). `patience="cfg"`: the section's."""
    seed_all(seed)  # the new layers' initial values
    model = build_model(base, len(classes), cfg)
    pad = model.enc_cfg.pad_idx
    train_loader = ClassificationLoader(base.vocab.encode_many(train_tokens), train_labels, bs=cfg.bs, shuffle=True,
                                        seed=seed, pad_idx=pad, max_tokens=cfg.max_doc_tokens,
                                        min_batches=cfg.min_steps_per_epoch)
    valid_loader = None if valid_tokens is None else ClassificationLoader(
        base.vocab.encode_many(valid_tokens), valid_labels, bs=cfg.bs * 2, shuffle=False, pad_idx=pad,
        max_tokens=cfg.max_doc_tokens)
    lm_loader = None
    if _unlabeled_note(unlabeled_docs, cfg):
        lm_bs = min(cfg.bs, (unlabeled_docs.n_tokens - 1) // 2)
        lm_loader = LMLoader(unlabeled_docs, bs=lm_bs, bptt=cfg.unlabeled_bptt, shuffle=True, seed=seed)

    parts = model.partitions()
    optimizers = make_optimizers(parts, cfg.pretrained_optimizer, cfg.pretrained_lr, cfg.embedding_lr, cfg.new_lr)
    stepper = SiatlStepper(parts, optimizers, cfg.clip, cfg.unfreeze_lstm_epoch, cfg.unfreeze_embedding_epoch)
    held = (f"{len(valid_tokens):,} validation documents" if valid_tokens is not None
            else f"nothing held out, keeping epoch {select_epoch}")
    log(f"{files.prefix}: {len(train_tokens):,} training / {held}, classes {classes}; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; selecting on {cfg.metric}"
        + _unlabeled_note(unlabeled_docs, cfg))
    loop_cfg = LoopConfig(monitor=cfg.metric, patience=cfg.patience if patience == "cfg" else patience, clip=cfg.clip,
                          seed=seed, precision=precision, progress=False, first_epoch=1, log_throughput=False,
                          select_epoch=select_epoch)
    stage = Stage("siatl", cfg.epochs, cfg.new_lr, schedule="constant", can_stop_early=True)
    class_loss = imbalance_loss(cfg.class_weights, train_labels, len(classes), imbalance or ImbalanceConfig())
    result = run_phase(model, SiatlTask(cfg, classes, lm_loader, precision, class_loss, keep_probs=keep_probs), stepper,
                       None, [stage], train_loader, valid_loader, files, loop_cfg, resume=resume,
                       callbacks=(_Progress(cfg, log, files.prefix),), meta=asdict(cfg))
    set_trainable(parts, PARTS)
    probs = None if valid_loader is None else evaluate(model, valid_loader, classes, precision)[1]
    return model, result, probs


def save_siatl_model(folder: Path, model: SiatlClassifier) -> None:
    """`siatl_model.json` (encoder AWDLSTMConfig + head config) and `siatl.safetensors`."""
    atomic_write_json(Path(folder) / CONFIG_FILE, {"encoder": model.enc_cfg.to_dict(), "head": model.cfg.to_dict()})
    save_weights(model.state_dict(), Path(folder) / MODEL_FILE)


def load_siatl_model(folder: Path) -> SiatlClassifier:
    """Rebuild the model saved by `train_siatl` from `folder` alone (in eval mode), checked by the
    model-folder validator (recipes/model_dir.py) against its vocabulary and classes."""
    from ulmfit.recipes import model_dir

    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.exists():
        raise UlmfitError(f"{folder}: no SiATL model ({CONFIG_FILE} missing); pass the --out folder of a siatl run")
    enc, head = model_dir.read_config(path, AWDLSTMConfig, "encoder"), model_dir.read_config(path, SiatlHeadConfig, "head")
    vocab, n_classes = model_dir.vocab_and_classes(folder)
    if vocab is not None:
        model_dir.check_vocab(folder, vocab, enc.vocab_size, f"{CONFIG_FILE} (encoder)")
    model_dir.check_classes(folder, n_classes, head.n_classes, f"{CONFIG_FILE} (head)")
    return model_dir.load_weights_into(SiatlClassifier(enc, head), folder / MODEL_FILE, CONFIG_FILE).eval()


def _check_inputs(train: Labelled, valid: Labelled, classes: list[str]) -> None:
    if len(classes) < 2:
        raise UlmfitError(f"siatl: classes must hold at least two names, got {classes}")
    for what, data in (("training", train), ("validation", valid)):
        labels = np.asarray(data.labels)
        if len(data.texts) == 0:
            raise UlmfitError(f"siatl: the {what} set ({data.source}) is empty; give it labelled rows")
        if labels.shape != (len(data.texts),):
            raise UlmfitError(f"siatl: the {what} set ({data.source}) has {len(data.texts)} texts but "
                              f"{labels.size} labels; give one label per text")
        if labels.min() < 0 or labels.max() >= len(classes):
            raise UlmfitError(f"siatl: {what} labels must be class indices in [0, {len(classes)}); "
                              f"encode them with the training classes")
