"""The ULMFiT recipe (Howard & Ruder 2018): fine-tune the language model on the target text, then
train a classifier on its encoder with gradual unfreezing and discriminative learning rates.

`finetune_lm()` and `train_classifier()` are its two phases, usable on their own (`ulmfit
finetune-lm`); `fit_recipe()` runs them per direction for `ulmfit fit` (registered in
recipes/ulmfit_config.py). `direction="bwd"` reads every document reversed; with two directions the
classifier averages the two models' probabilities (ULMFiT §4, "bidirectional"), and the two models
train side by side in two processes where that pays (`parallel_plan`, train/processes.py). The pieces other
recipes share (the starting LM, tokens, seeding) are in recipes/toolbox.py.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.data.lm_loader import LMLoader
from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import CLASSIFIER_DROPOUTS, AWDLSTM, AWDLSTMConfig, LanguageModel
from ulmfit.models.classifier import ClassifierConfig, TextClassifier
from ulmfit.recipes import model_dir
from ulmfit.recipes.config import ImbalanceConfig, LMTrainConfig
from ulmfit.recipes.prepare import Labelled
from ulmfit.recipes.registry import Run
from ulmfit.recipes.toolbox import (LMResult, Log, language_model, quiet, scratch_lm, seed_all, subsample_tokens,
                                    target_vocab, tokens_for)
from ulmfit.fileio import atomic_write_json
from ulmfit.recipes.ulmfit_config import ClassifierTrainConfig
from ulmfit.text.tokenize import Tokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.train import distributed
from ulmfit.train.distill import NO_LABEL, DistillTask, SoftTargets
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
from ulmfit.recipes.selection import cross_validate
from ulmfit.train.metrics import classification_metrics
from ulmfit.train.optim import make_optimizer, param_groups
from ulmfit.train.checkpoint import EpochSnapshots
from ulmfit.train.processes import Job, run_in_processes
from ulmfit.train.tasks import ClassifierTask, LMTask, imbalance_loss


def finetune_lm(token_lists: list[list[str]], out: Path, cfg: LMTrainConfig, *, tokenizer: Tokenizer,
                vocab: Vocab | None = None, pretrained: str | None = None, seed: int = 0, optimizer: str = "adamw",
                precision: str = "auto", resume: bool = False, direction: str = "fwd", log: Log = quiet,
                keep_epochs: bool = False, callbacks: tuple = ()) -> LMResult:
    """Phase 1: train the language model on the target's text (ULMFiT §3.2) and save it into `out`.

    The epoch kept (and early stopping) follows `cfg.metric`: validation loss or next-word accuracy
    (docs/GUIDE.md, "Stopping LM fine-tuning"). `keep_epochs`: also keep every epoch's weights,
    `out/epochs/lm-epoch<N>.safetensors` (train/checkpoint.py `EpochSnapshots`), to compare the
    epochs afterwards. `callbacks`: more `run_phase` callbacks (e.g. a benchmark's timer).

    `direction="bwd"`: a backward LM, trained on every document reversed (token order within each
    document; documents keep their order, so no document is read into the start of the next one)."""
    out.mkdir(parents=True, exist_ok=True)
    seed_all(seed)
    pretrained = model_dir.resolve_pretrained(pretrained)
    if vocab is None:
        vocab = target_vocab(token_lists, cfg, pretrained)
    model_dir.save_text_pipeline(out, tokenizer.config, vocab)
    lm, lm_cfg = language_model(pretrained, vocab, cfg, log)

    docs = vocab.encode_many(token_lists)
    if direction == "bwd":
        docs = docs.reversed()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    n_valid = max(1, int(len(docs) * cfg.valid_frac))
    valid_docs = docs.subset(np.sort(order[:n_valid]))
    train_docs = subsample_tokens(docs.subset(np.sort(order[n_valid:])), cfg.max_train_tokens, seed)
    log(f"{model_dir.DIRECTION_NAMES[direction]} language model: {train_docs.n_tokens:,} training tokens ({len(train_docs):,} documents), "
        f"{valid_docs.n_tokens:,} validation tokens; vocab {len(vocab):,}; "
        f"{sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters")
    valid_bs = max(1, min(cfg.bs, valid_docs.n_tokens // (2 * cfg.bptt) or 1))
    train_loader = LMLoader(train_docs, bs=cfg.bs, bptt=cfg.bptt, shuffle=True,
                            variable_bptt=cfg.variable_bptt, seed=seed)
    valid_loader = LMLoader(valid_docs, bs=valid_bs, bptt=cfg.bptt, shuffle=False)

    stages = [Stage("all", cfg.epochs, cfg.lr, freeze_to=0, schedule=cfg.schedule, can_stop_early=True)]
    if pretrained is not None and cfg.frozen_epochs > 0:
        stages.insert(0, Stage("frozen", cfg.frozen_epochs, cfg.frozen_lr, freeze_to=-1, schedule=cfg.schedule))
    groups = lm.layer_groups()
    opt = make_optimizer(param_groups(groups, cfg.lr, weight_decay=cfg.wd), kind=optimizer)
    loop_cfg = LoopConfig(monitor=cfg.metric, patience=cfg.patience, seed=seed, precision=precision)
    result = run_phase(lm, LMTask(cfg.alpha, cfg.beta), opt, groups, stages, train_loader, valid_loader,
                       PhaseFiles(out, "lm"), loop_cfg, resume=resume,
                       callbacks=((EpochSnapshots(lm, out / "epochs", "lm"),) if keep_epochs else ()) + tuple(callbacks))
    model_dir.save_lm(out, lm, lm_cfg)
    last = result.history[-1] if result.history else {}
    if result.best_value is None:  # lm.epochs=0 (and no frozen epoch): the starting LM as it is
        log("language model: no fine-tuning epochs (lm.epochs=0); the classifier starts from the pretrained LM as it is")
    else:
        best = next((r for r in result.history if r["epoch"] == result.best_epoch), last)
        log(f"language model done: kept epoch {result.best_epoch} (best validation {cfg.metric}): perplexity "
            f"{best['perplexity']:.1f}, accuracy {best['accuracy']:.3f}; the last epoch: perplexity "
            f"{last.get('perplexity', float('nan')):.1f}, accuracy {last.get('accuracy', float('nan')):.3f}")
    return LMResult(lm, lm_cfg, tokenizer, vocab, result.history)


def classifier_from_lm(lm: LanguageModel, lm_cfg: AWDLSTMConfig, n_classes: int,
                       cfg: ClassifierTrainConfig) -> tuple[TextClassifier, AWDLSTMConfig, ClassifierConfig]:
    """A classifier whose encoder starts from the language model's, with the classifier's dropouts."""
    enc_cfg, head_cfg = classifier_configs(lm_cfg, n_classes, cfg)
    encoder = AWDLSTM(enc_cfg)
    encoder.load_state_dict(lm.encoder.state_dict())
    return TextClassifier(encoder, head_cfg), enc_cfg, head_cfg


def classifier_configs(lm_cfg: AWDLSTMConfig, n_classes: int,
                       cfg: ClassifierTrainConfig) -> tuple[AWDLSTMConfig, ClassifierConfig]:
    """The encoder's config (the LM's with the classifier's dropouts) and the head's."""
    enc_cfg = replace(lm_cfg, drop_mult=cfg.drop_mult, softmax="full", cutoffs=(), **CLASSIFIER_DROPOUTS)  # no LM head
    head_cfg = ClassifierConfig(n_classes=n_classes, lin_sizes=tuple(cfg.lin_sizes),
                                ps=(CLASSIFIER_DROPOUTS["output_p"] * cfg.drop_mult,) + (0.1,) * len(cfg.lin_sizes),
                                bptt=cfg.bptt, max_len=cfg.pool_len)
    return enc_cfg, head_cfg


def gradual_unfreezing(cfg: ClassifierTrainConfig) -> list[Stage]:
    """ULMFiT §3.3: train the head, then unfreeze one more layer group per stage, then everything."""
    if len(cfg.lrs) != len(cfg.epochs) or not cfg.lrs:
        raise UlmfitError(f"classifier lrs {cfg.lrs} and epochs {cfg.epochs} must have the same, non-zero length")
    n = len(cfg.lrs)
    return [Stage(name="all" if i == n - 1 else f"freeze{-(i + 1)}", epochs=e, lr=lr,
                  freeze_to=0 if i == n - 1 else -(i + 1), schedule=cfg.schedule, can_stop_early=(i == n - 1))
            for i, (lr, e) in enumerate(zip(cfg.lrs, cfg.epochs))]


def train_classifier(lm: LMResult, train: Labelled, valid: Labelled, classes: list[str], out: Path,
                     cfg: ClassifierTrainConfig, *, seed: int = 0, optimizer: str = "adamw", precision: str = "auto",
                     resume: bool = False, train_tokens: list[list[str]] | None = None,
                     valid_tokens: list[list[str]] | None = None, direction: str = "fwd",
                     soft: SoftTargets | None = None, imbalance=None, log: Log = quiet) -> tuple[TextClassifier, dict]:
    """Phase 2: the classifier, best checkpoint by `cfg.metric` on `valid`; returns (model, valid metrics).

    `train_tokens` / `valid_tokens`: the texts already tokenized (by the LM phase), so they are not
    tokenized twice. `direction="bwd"`: every document is read reversed (still right-padded).
    `soft`: distillation (recipes/distill.py): the teacher's probabilities for the gold rows and for
    `soft.extra_tokens`, unlabelled rows appended to the training set; trained with `DistillTask`,
    still selected on `valid`'s gold labels."""
    if train_tokens is None:
        train_tokens = lm.tokenizer.tokenize_many(train.texts)
    if valid_tokens is None:
        valid_tokens = lm.tokenizer.tokenize_many(valid.texts)
    extra = f" + {len(soft.extra_tokens):,} unlabelled with the teacher's soft targets" if soft is not None else ""
    log(f"{model_dir.DIRECTION_NAMES[direction]} classifier: {len(train.texts):,} training{extra} / {len(valid.texts):,} "
        f"validation documents, classes {classes}; selecting on {cfg.metric}")
    model, result, probs = _train(lm, train_tokens, train.labels, valid_tokens, valid.labels, classes, cfg,
                                  PhaseFiles(out, "classifier"), seed=seed, optimizer=optimizer, precision=precision,
                                  resume=resume, direction=direction, soft=soft, imbalance=imbalance)
    metrics = classification_metrics(valid.labels, probs.argmax(1), classes)
    _save(out, model, lm, cfg, len(classes))
    log(f"classifier done: best {cfg.metric} {result.best_value:.4f} (epoch {result.best_epoch}); "
        f"validation accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    return model, metrics


def _train(lm: LMResult, train_tokens, train_labels: np.ndarray, valid_tokens, valid_labels: np.ndarray | None,
           classes: list[str], cfg: ClassifierTrainConfig, files: PhaseFiles, *, seed: int, optimizer: str,
           precision: str, resume: bool, direction: str, soft: SoftTargets | None = None, imbalance=None,
           patience: int | None | str = "cfg", select_epoch: int | None = None,
           keep_probs: bool = False) -> tuple[TextClassifier, object, np.ndarray | None]:
    """One classifier phase through `run_phase` (gradual unfreezing), shared by the plain fit, the
    folds of cross-validated selection and its refit: (model with the kept weights, the phase's
    result, its validation probabilities or None). `valid_tokens=None`: nothing held out, the
    weights of epoch `select_epoch` are kept. `patience="cfg"`: the section's."""
    seed_all(seed)
    model, _, _ = classifier_from_lm(lm.lm, lm.config, len(classes), cfg)
    labels = train_labels
    if soft is not None:
        train_tokens = list(train_tokens) + list(soft.extra_tokens)
        labels = np.concatenate([train_labels, np.full(len(soft.extra_tokens), NO_LABEL, dtype=np.int64)])
    train_docs = lm.vocab.encode_many(train_tokens)
    valid_docs = None if valid_tokens is None else lm.vocab.encode_many(valid_tokens)
    if direction == "bwd":
        train_docs = train_docs.reversed()
        valid_docs = None if valid_docs is None else valid_docs.reversed()
    train_loader = ClassificationLoader(train_docs, labels, bs=cfg.bs, shuffle=True, seed=seed,
                                        max_tokens=cfg.max_doc_tokens, min_batches=cfg.min_steps_per_epoch)
    valid_loader = None if valid_docs is None else ClassificationLoader(valid_docs, valid_labels, bs=cfg.bs * 2,
                                                                         shuffle=False, max_tokens=cfg.max_doc_tokens)
    class_loss = imbalance_loss(cfg.class_weights, train_labels, len(classes), imbalance or ImbalanceConfig())
    task = (ClassifierTask(classes, class_loss, keep_probs=keep_probs) if soft is None
            else DistillTask(classes, soft.probs, soft.temperature, soft.alpha, class_loss))
    groups = model.layer_groups()
    opt = make_optimizer(param_groups(groups, cfg.lrs[0], factor=cfg.lr_factor, weight_decay=cfg.wd), kind=optimizer)
    loop_cfg = LoopConfig(monitor=cfg.metric, patience=cfg.patience if patience == "cfg" else patience, seed=seed,
                          precision=precision, select_epoch=select_epoch, lr_factor=cfg.lr_factor)
    result = run_phase(model, task, opt, groups, gradual_unfreezing(cfg), train_loader, valid_loader, files, loop_cfg,
                       resume=resume)
    return model, result, None if valid_loader is None else task.predict(model, valid_loader)


def _save(out: Path, model: TextClassifier, lm: LMResult, cfg: ClassifierTrainConfig, n_classes: int) -> None:
    enc_cfg, head_cfg = classifier_configs(lm.config, n_classes, cfg)
    model_dir.save_classifier(out, model, enc_cfg, head_cfg)


# ----------------------------------------------------------------------------- cross-validated selection


def cv_classifier(lm: LMResult, train: Labelled, valid: Labelled, classes: list[str], out: Path,
                  cfg: ClassifierTrainConfig, *, train_tokens, valid_tokens, seed: int = 0, optimizer: str = "adamw",
                  precision: str = "auto", resume: bool = False, direction: str = "fwd", imbalance=None,
                  log: Log = quiet) -> dict:
    """Phase 2 for small label sets (recipes/selection.py): the training and validation rows pooled
    into `cfg.cv_folds` stratified folds, one classifier per fold through `_train` on the same
    fine-tuned LM (no early stopping: every fold has the whole curve), the epoch maximising the mean
    of the folds' `cfg.metric` curves, a refit on all rows keeping that epoch's weights, saved.
    Returns the out-of-fold metrics; `cv.json` holds the rest."""
    tokens = list(train_tokens) + list(valid_tokens)
    labels = np.concatenate([train.labels, valid.labels])
    common = dict(seed=seed, optimizer=optimizer, precision=precision, resume=resume, direction=direction,
                  imbalance=imbalance)

    def fit_fold(f, tr, held, files):
        return _train(lm, [tokens[i] for i in tr], labels[tr], [tokens[i] for i in held], labels[held], classes, cfg,
                      files, patience=None, keep_probs=True, **common)[1]

    def refit(epoch):
        model, _, _ = _train(lm, tokens, labels, None, None, classes, cfg, PhaseFiles(out, "classifier"),
                             select_epoch=epoch, **common)
        _save(out, model, lm, cfg, len(classes))

    return cross_validate(out, labels, classes, folds=cfg.cv_folds, seed=seed, metric=cfg.metric, fit_fold=fit_fold,
                          refit=refit, resume=resume, log=log, what=f"{model_dir.DIRECTION_NAMES[direction]} classifier",
                          pooled=(len(train.labels), len(valid.labels)), switch="clf.cv")


# ----------------------------------------------------------------------------- `ulmfit fit`
def fit_recipe(run: Run) -> dict:
    """Both phases for every direction of the run (`_fit_direction`, through `fit_directions`);
    returns the validation metrics (of the average, for two models)."""
    return fit_directions(run, _fit_direction)


def fit_directions(run: Run, train_one: Callable[[Run, str, dict], dict], recipe: str = "ulmfit") -> dict:
    """Train every direction of the run with `train_one(run, direction, cache) -> record` (its model
    into `model_dir.direction_folder(run.out, ...)`; the record, {"metrics": validation metrics, ...},
    is saved as the direction's done file), then average. Shared by the recipes that train one model
    per direction (ulmfit, distill). A direction already trained (its done file) is not trained again
    on resume. The texts are tokenized here, once per tokenizer (`cache`, handed to `train_one`); the
    models still to train are trained in this process one after the other, or side by side in two
    processes (`parallel_plan`; `train_one` must then be picklable: a module-level function or a
    `functools.partial` of one); the average, its reports and the backward sub-folder's marker
    (recipe `recipe`) are computed here from the models' folders either way."""
    dirs, cache = list(run.configs), {}
    todo = [d for d in dirs if not _already_trained(run, d)]
    for d in todo:
        tokens_for(pretrained_lm(run, d), run.data, cache, run.log)
    parallel, why = parallel_plan(run.configs[dirs[0]].parallel_directions, todo)
    if len(dirs) > 1 and todo:
        run.log(why)
    if parallel:
        jobs = {d: Job(_direction_in_child, (train_one, replace(run, log=quiet), d, cache)) for d in todo}
        run_in_processes(jobs, threads=_threads_each(), log=run.log)
    else:
        for d in todo:
            _train_direction(train_one, run, d, cache)
    if len(dirs) == 1:
        return done_record(run.out, dirs[0])["metrics"]
    return _ensemble(run, recipe)


def parallel_plan(setting: str, todo: list[str]) -> tuple[bool, str]:
    """Whether the models of `todo` (the directions still to train) train side by side, one process
    each, and why, in one line. `setting`: the config's `parallel_directions` (auto | on | off)."""
    threads, ranks = torch.get_num_threads(), distributed.world_size()
    if setting == "on" and ranks > 1:  # [distributed]
        raise UlmfitError("parallel_directions=on does not run under torchrun (its ranks already share the cores); "
                          "set it to auto or off")
    names = " and ".join(model_dir.DIRECTION_NAMES[d] for d in todo)
    if len(todo) < 2:
        return False, f"directions: only the {names} model is left to train, in this process"
    sequential = f"directions: the {names} models one after the other, {threads} thread(s) each"
    if setting == "off":
        return False, f"{sequential} (parallel_directions=off)"
    if setting == "auto" and ranks > 1:  # [distributed]
        return False, f"{sequential} (parallel_directions=auto: a torchrun run stays in its ranks)"
    if setting == "auto" and threads < 2:
        return False, f"{sequential} (parallel_directions=auto: torch has 1 thread; 'on' forces two processes)"
    return True, (f"directions: the {names} models side by side, two processes of {_threads_each()} thread(s) "
                  f"each (parallel_directions={setting}: torch has {threads} thread{'s' if threads > 1 else ''})")


def _threads_each() -> int:
    """Torch threads of each process when the two models train side by side: half of this process's."""
    return max(1, torch.get_num_threads() // 2)


def _done_file(out: Path, direction: str) -> Path:
    """Written when a direction's model is complete: a resumed `both` run does not train it again."""
    return out / "checkpoints" / f"{direction}-done.json"


def done_record(out: Path, direction: str) -> dict:
    """What `train_one` returned for a finished direction (with "seconds"): see `fit_directions`."""
    return json.loads(_done_file(out, direction).read_text())


def _already_trained(run: Run, direction: str) -> bool:
    done = run.resume and _done_file(run.out, direction).exists()
    if done:
        run.log(f"{model_dir.DIRECTION_NAMES[direction]} model: already trained, not trained again")
    return done


def pretrained_lm(run: Run, direction: str) -> Path | None:
    """The folder of the `direction` model's starting LM (None: from scratch)."""
    return model_dir.resolve_pretrained(run.configs[direction].pretrained_for(direction), direction)


def _direction_in_child(train_one: Callable, run: Run, direction: str, cache: dict, log: Log) -> None:
    """`_train_direction` in a child process (train/processes.py): its lines go to `log`."""
    _train_direction(train_one, replace(run, log=log), direction, cache)


def _train_direction(train_one: Callable, run: Run, direction: str, cache: dict) -> None:
    """One direction's model by `train_one`; its done file last (only a complete model has one)."""
    t0 = time.perf_counter()
    record = train_one(run, direction, cache)
    atomic_write_json(_done_file(run.out, direction), {**record, "seconds": time.perf_counter() - t0})
    distributed.barrier()  # [distributed] rank 0's files of this model are written before any rank reads them


def _fit_direction(run: Run, direction: str, cache: dict) -> dict:
    """Both phases of one model into its folder (the ulmfit recipe's `train_one`)."""
    data, resume, log, cfg = run.data, run.resume, run.log, run.configs[direction]
    folder = model_dir.direction_folder(run.out, next(iter(run.configs)), direction)
    pretrained = pretrained_lm(run, direction)
    tokens = tokens_for(pretrained, data, cache, log)
    vocab = Vocab.load(folder / "vocab.json") if resume and (folder / "vocab.json").exists() else None
    lm = finetune_lm(tokens.lm, folder, cfg.lm, tokenizer=tokens.tokenizer, vocab=vocab, pretrained=pretrained,
                     seed=cfg.seed, optimizer=cfg.optimizer, precision=cfg.precision, resume=resume,
                     direction=direction, log=log)
    common = dict(seed=cfg.seed, optimizer=cfg.optimizer, precision=cfg.precision, resume=resume,
                  train_tokens=tokens.lm[:len(data.train.texts)], valid_tokens=tokens.valid, direction=direction,
                  imbalance=cfg.imbalance, log=log)
    if cfg.clf.cv == "on":  # resolved from "auto" for this data by posthoc.resolve_selection
        metrics = cv_classifier(lm, data.train, data.valid, data.classes, folder, cfg.clf, **common)
    else:
        _, metrics = train_classifier(lm, data.train, data.valid, data.classes, folder, cfg.clf, **common)
    return {"metrics": metrics}


def _ensemble(run: Run, recipe: str = "ulmfit") -> dict:
    """Validation metrics of each model and of their average; completes the backward sub-folder
    (its report, its marker naming `recipe`)."""
    from ulmfit.recipes import posthoc
    from ulmfit.recipes.fit import write_reports
    from ulmfit.recipes.predictor import BUILD_PRECISION, Member, metrics_by_direction, proba_by_direction

    dirs, data, out = list(run.configs), run.data, run.out
    folders = {d: model_dir.direction_folder(out, dirs[0], d) for d in dirs}
    held = posthoc.cv_held_out(list(folders.values()))  # cross-validated: the out-of-fold probabilities
    if held is not None:
        probs, labels = dict(zip(dirs, held[0])), held[1]
    else:
        members = [Member.load(folders[d], d, precision=BUILD_PRECISION) for d in dirs]
        probs, labels = proba_by_direction(members, data.valid.texts, len(data.classes)), data.valid.labels
    metrics = metrics_by_direction(probs, labels, data.classes)
    for d in dirs[1:]:
        seconds = done_record(out, d)["seconds"]
        write_reports(folders[d], metrics["by_direction"][d], data.classes, run.configs[d], seconds, direction=d)
        model_dir.write_marker(folders[d], "classifier", classes=data.classes, recipe=recipe,
                               metric=run.configs[d].clf.metric, direction=d, directions=[d])
        model_dir.remove_checkpoints(folders[d])
    run.log(("out-of-fold" if held is not None else "validation") + " macro-F1: " + ", ".join(f"{d} {m['macro_f1']:.4f}" for d, m in metrics["by_direction"].items())
            + f", averaged {metrics['macro_f1']:.4f}")
    return metrics
