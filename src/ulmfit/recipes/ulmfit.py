"""The ULMFiT recipe (Howard & Ruder 2018): fine-tune the language model on the target text, then
train a classifier on its encoder with gradual unfreezing and discriminative learning rates.

`fit()` is what `ulmfit fit` runs; `finetune_lm()` and `train_classifier()` are its two phases and
are usable on their own (`ulmfit finetune-lm`). With `direction="both"` fit runs both phases twice,
forward then backward (every document read reversed), into one folder (the backward model in
`bwd/`), and the classifier averages the two models' probabilities (ULMFiT §4, "bidirectional").
With `recipe="siatl"` fit prepares the data the same way and hands over to `recipes/siatl.py`.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.data.lm_loader import LMLoader
from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import CLASSIFIER_DROPOUTS, PRESETS, AWDLSTM, AWDLSTMConfig, LanguageModel
from ulmfit.models.classifier import ClassifierConfig, TextClassifier
from ulmfit.models.vocab_transfer import transfer_vocab
from ulmfit.recipes import model_dir
from ulmfit.recipes.config import ClassifierTrainConfig, FitConfig, LMTrainConfig
from ulmfit.recipes.prepare import FitData, Labelled, load_fit_data
from ulmfit.text.token_docs import TokenDocs
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab
from ulmfit.train.checkpoint import atomic_write_json, atomic_write_text
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
from ulmfit.train.metrics import classification_metrics, format_report
from ulmfit.train.optim import make_optimizer, param_groups
from ulmfit.train.plots import plot_history
from ulmfit.train.tasks import ClassifierTask, LMTask, balanced_class_weights

Log = Callable[[str], None]


@dataclass
class LMResult:
    lm: LanguageModel
    config: AWDLSTMConfig
    tokenizer: Tokenizer
    vocab: Vocab
    history: list


def _quiet(msg: str) -> None:
    pass


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def load_pretrained(name: str | Path, log: Log) -> tuple[LanguageModel, Tokenizer, Vocab]:
    path = model_dir.resolve_pretrained(name)
    lm, tok, vocab = model_dir.load_lm(path)
    log(f"pretrained LM: {path} (vocab {len(vocab)}, {sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters)")
    return lm, tok, vocab


def lm_from_pretrained(pretrained: LanguageModel, old_vocab: Vocab, new_vocab: Vocab, cfg: LMTrainConfig,
                       log: Log) -> tuple[LanguageModel, AWDLSTMConfig]:
    """The pretrained LM re-sized to `new_vocab` (shared words keep their rows), with this run's dropouts."""
    base = pretrained.encoder.cfg if hasattr(pretrained.encoder, "cfg") else pretrained.cfg
    lm_cfg = replace(base, vocab_size=len(new_vocab), drop_mult=cfg.drop_mult)
    state, found = transfer_vocab(pretrained.state_dict(), old_vocab.itos, new_vocab.itos,
                                  embedding_keys=tuple(k for k in pretrained.state_dict() if _is_vocab_matrix(k)),
                                  bias_keys=tuple(k for k in pretrained.state_dict() if k.endswith("decoder.bias")))
    log(f"vocabulary transfer: {found}/{len(new_vocab)} target tokens found in the pretrained vocabulary "
        f"({100 * found / len(new_vocab):.1f}%); the rest start at the mean embedding")
    lm = LanguageModel(lm_cfg)
    lm.load_state_dict(state)
    return lm, lm_cfg


def scratch_lm(vocab: Vocab, cfg: LMTrainConfig) -> tuple[LanguageModel, AWDLSTMConfig]:
    """A new, untrained LM of size `cfg.preset` for `vocab`."""
    if cfg.preset not in PRESETS:
        raise UlmfitError(f"unknown model preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    lm_cfg = AWDLSTMConfig(vocab_size=len(vocab), drop_mult=cfg.drop_mult, **PRESETS[cfg.preset])
    return LanguageModel(lm_cfg), lm_cfg


def _is_vocab_matrix(key: str) -> bool:
    return key.endswith("embedding.weight") or key.endswith("decoder.weight")


def subsample_tokens(docs: TokenDocs, max_tokens: int | None, seed: int) -> TokenDocs:
    if not max_tokens or docs.n_tokens <= max_tokens:
        return docs
    order = np.random.default_rng(seed).permutation(len(docs))
    keep = order[: int(np.searchsorted(np.cumsum(docs.lengths[order]), max_tokens)) + 1]
    return docs.subset(np.sort(keep))


def finetune_lm(token_lists: list[list[str]], out: Path, cfg: LMTrainConfig, *, tokenizer: Tokenizer,
                vocab: Vocab | None = None, pretrained: str | None = None, seed: int = 0, optimizer: str = "adamw",
                precision: str = "fp32", resume: bool = False, direction: str = "fwd", log: Log = _quiet) -> LMResult:
    """Phase 1: train the language model on the target's text (ULMFiT §3.2) and save it into `out`.

    `direction="bwd"`: a backward LM, trained on every document reversed (token order within each
    document; documents keep their order, so no document is read into the start of the next one)."""
    out.mkdir(parents=True, exist_ok=True)
    _seed_all(seed)
    base = load_pretrained(pretrained, log) if model_dir.resolve_pretrained(pretrained) else None
    if vocab is None:
        vocab = Vocab.build(token_lists, min_freq=cfg.min_freq, max_vocab=cfg.max_vocab)
    model_dir.save_text_pipeline(out, tokenizer.config, vocab)
    if base is not None:
        lm, lm_cfg = lm_from_pretrained(base[0], base[2], vocab, cfg, log)
    else:
        lm, lm_cfg = scratch_lm(vocab, cfg)

    docs = vocab.encode_many(token_lists)
    if direction == "bwd":
        docs = docs.reversed()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    n_valid = max(1, int(len(docs) * cfg.valid_frac))
    valid_docs = docs.subset(np.sort(order[:n_valid]))
    train_docs = subsample_tokens(docs.subset(np.sort(order[n_valid:])), cfg.max_tokens, seed)
    log(f"{model_dir.DIRECTION_NAMES[direction]} language model: {train_docs.n_tokens:,} training tokens ({len(train_docs):,} documents), "
        f"{valid_docs.n_tokens:,} validation tokens; vocab {len(vocab):,}; "
        f"{sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters")
    valid_bs = max(1, min(cfg.bs, valid_docs.n_tokens // (2 * cfg.bptt) or 1))
    train_loader = LMLoader(train_docs, bs=cfg.bs, bptt=cfg.bptt, shuffle=True,
                            variable_bptt=cfg.variable_bptt, seed=seed)
    valid_loader = LMLoader(valid_docs, bs=valid_bs, bptt=cfg.bptt, shuffle=False)

    stages = [Stage("all", cfg.epochs, cfg.lr, freeze_to=0, schedule=cfg.schedule, can_stop_early=True)]
    if base is not None and cfg.frozen_epochs > 0:
        stages.insert(0, Stage("frozen", cfg.frozen_epochs, cfg.frozen_lr, freeze_to=-1, schedule=cfg.schedule))
    groups = lm.layer_groups()
    opt = make_optimizer(param_groups(groups, cfg.lr, weight_decay=cfg.wd), kind=optimizer)
    loop_cfg = LoopConfig(monitor="valid_loss", patience=cfg.patience, seed=seed, precision=precision)
    result = run_phase(lm, LMTask(cfg.alpha, cfg.beta), opt, groups, stages, train_loader, valid_loader,
                       PhaseFiles(out, "lm"), loop_cfg, resume=resume)
    model_dir.save_lm(out, lm, lm_cfg)
    last = result.history[-1] if result.history else {}
    log(f"language model done: best validation perplexity {np.exp(result.best_value or np.nan):.1f} "
        f"(accuracy {last.get('accuracy', float('nan')):.3f} at the last epoch)")
    return LMResult(lm, lm_cfg, tokenizer, vocab, result.history)


def classifier_from_lm(lm: LanguageModel, lm_cfg: AWDLSTMConfig, n_classes: int,
                       cfg: ClassifierTrainConfig) -> tuple[TextClassifier, AWDLSTMConfig, ClassifierConfig]:
    """A classifier whose encoder starts from the language model's, with the classifier's dropouts."""
    enc_cfg = replace(lm_cfg, drop_mult=cfg.drop_mult, **CLASSIFIER_DROPOUTS)
    head_cfg = ClassifierConfig(n_classes=n_classes, lin_sizes=tuple(cfg.lin_sizes),
                                ps=(CLASSIFIER_DROPOUTS["output_p"] * cfg.drop_mult,) + (0.1,) * len(cfg.lin_sizes),
                                bptt=cfg.bptt, max_len=cfg.max_len)
    encoder = AWDLSTM(enc_cfg)
    encoder.load_state_dict(lm.encoder.state_dict())
    return TextClassifier(encoder, head_cfg), enc_cfg, head_cfg


def gradual_unfreezing(cfg: ClassifierTrainConfig) -> list[Stage]:
    """ULMFiT §3.3: train the head, then unfreeze one more layer group per stage, then everything."""
    if len(cfg.lrs) != len(cfg.epochs) or not cfg.lrs:
        raise UlmfitError(f"classifier lrs {cfg.lrs} and epochs {cfg.epochs} must have the same, non-zero length")
    n = len(cfg.lrs)
    return [Stage(name="all" if i == n - 1 else f"freeze{-(i + 1)}", epochs=e, lr=lr,
                  freeze_to=0 if i == n - 1 else -(i + 1), schedule=cfg.schedule, can_stop_early=(i == n - 1))
            for i, (lr, e) in enumerate(zip(cfg.lrs, cfg.epochs))]


def train_classifier(lm: LMResult, train: Labelled, valid: Labelled, classes: list[str], out: Path,
                     cfg: ClassifierTrainConfig, *, seed: int = 0, optimizer: str = "adamw", precision: str = "fp32",
                     resume: bool = False, train_tokens: list[list[str]] | None = None,
                     valid_tokens: list[list[str]] | None = None, direction: str = "fwd",
                     log: Log = _quiet) -> tuple[TextClassifier, dict]:
    """Phase 2: the classifier, best checkpoint by `cfg.metric` on `valid`; returns (model, valid metrics).

    `train_tokens` / `valid_tokens`: the texts already tokenized (by the LM phase), so they are not
    tokenized twice. `direction="bwd"`: every document is read reversed (still right-padded)."""
    _seed_all(seed)
    model, enc_cfg, head_cfg = classifier_from_lm(lm.lm, lm.config, len(classes), cfg)
    if train_tokens is None:
        train_tokens = lm.tokenizer.tokenize_many(train.texts)
    if valid_tokens is None:
        valid_tokens = lm.tokenizer.tokenize_many(valid.texts)
    train_docs, valid_docs = lm.vocab.encode_many(train_tokens), lm.vocab.encode_many(valid_tokens)
    if direction == "bwd":
        train_docs, valid_docs = train_docs.reversed(), valid_docs.reversed()
    train_loader = ClassificationLoader(train_docs, train.labels, bs=cfg.bs, shuffle=True, seed=seed,
                                        max_tokens=cfg.max_tokens, min_batches=cfg.min_steps_per_epoch)
    valid_loader = ClassificationLoader(valid_docs, valid.labels, bs=cfg.bs * 2, shuffle=False,
                                        max_tokens=cfg.max_tokens)
    weights = balanced_class_weights(train.labels, len(classes)) if cfg.class_weights == "balanced" else None
    if cfg.class_weights not in ("none", "balanced"):
        raise UlmfitError(f"class_weights must be 'none' or 'balanced', not {cfg.class_weights!r}")
    task = ClassifierTask(classes, weights)
    groups = model.layer_groups()
    opt = make_optimizer(param_groups(groups, cfg.lrs[0], weight_decay=cfg.wd), kind=optimizer)
    loop_cfg = LoopConfig(monitor=cfg.metric, patience=cfg.patience, seed=seed, precision=precision)
    log(f"{model_dir.DIRECTION_NAMES[direction]} classifier: {len(train.texts):,} training / {len(valid.texts):,} validation documents, "
        f"classes {classes}; selecting on {cfg.metric}")
    result = run_phase(model, task, opt, groups, gradual_unfreezing(cfg), train_loader, valid_loader,
                       PhaseFiles(out, "classifier"), loop_cfg, resume=resume)
    probs = task.predict(model, valid_loader)
    metrics = classification_metrics(valid.labels, probs.argmax(1), classes)
    model_dir.save_classifier(out, model, enc_cfg, head_cfg)
    log(f"classifier done: best {cfg.metric} {result.best_value:.4f} (epoch {result.best_epoch}); "
        f"validation accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    return model, metrics


def fit(train, valid=None, *, out: str | Path, text_col: str = "text", label_col: str = "label",
        unlabeled: list[str] | tuple = (), pretrained: str | None = "auto", config: FitConfig | None = None,
        resume: bool = False, overwrite: bool = False, log: Log = _quiet):
    """Train a ULMFiT classifier end to end and return the loaded model (see `ulmfit.load`)."""
    from ulmfit.recipes.predictor import Classifier

    out = Path(out)
    cfg = _resolve_config(out, config, resume, overwrite)
    if config is None and not resume:
        cfg.data = replace(cfg.data, text_col=text_col, label_col=label_col)
        cfg.pretrained = pretrained if pretrained is not None else cfg.pretrained
    cfg.data = replace(cfg.data, train=_path_or_none(train), valid=_path_or_none(valid),
                       unlabeled=[str(u) for u in unlabeled] or cfg.data.unlabeled)
    dirs = _check_recipe(cfg)
    configs = _direction_configs(out, cfg, resume)  # checks the pretrained LMs before reading any data
    t0 = time.perf_counter()
    data = load_fit_data(train, valid, cfg.data, cfg.seed, log)
    for d, c in configs.items():
        _folder(out, dirs, d).mkdir(parents=True, exist_ok=True)
        atomic_write_json(_folder(out, dirs, d) / "config.json", c.to_dict())
    if cfg.recipe == "siatl":
        metrics = _fit_siatl(out, configs["fwd"], data, resume, log)
    else:
        metrics = _fit_ulmfit(out, configs, data, resume, log)
    write_reports(out, metrics, data.classes, configs[dirs[0]], time.perf_counter() - t0)
    model_dir.write_marker(out, "classifier", classes=data.classes, recipe=cfg.recipe, metric=_metric(cfg),
                           direction=dirs[0], directions=dirs)
    model_dir.remove_checkpoints(out)
    return Classifier(out)


def _check_recipe(cfg: FitConfig) -> list[str]:
    dirs = cfg.directions
    if cfg.recipe not in ("ulmfit", "siatl"):
        raise UlmfitError(f"recipe {cfg.recipe!r} is not available; use --recipe ulmfit or --recipe siatl")
    if cfg.recipe == "siatl" and dirs != ["fwd"]:
        raise UlmfitError("--recipe siatl supports --direction fwd only")
    return dirs


def _metric(cfg: FitConfig) -> str:
    return cfg.siatl.metric if cfg.recipe == "siatl" else cfg.clf.metric


def _folder(out: Path, dirs: list[str], direction: str) -> Path:
    return model_dir.direction_folder(out, dirs[0], direction)


def _direction_configs(out: Path, cfg: FitConfig, resume: bool) -> dict[str, FitConfig]:
    """Each model's config with its "auto" rates resolved (fine-tuning or scratch rates, per its own
    pretrained LM). Saved as config.json of its folder before training, so --resume reuses them."""
    configs = {}
    for d in cfg.directions:
        saved = _folder(out, cfg.directions, d) / "config.json"
        configs[d] = FitConfig.load(saved) if resume and saved.parent != out and saved.exists() else cfg.resolved(d)
    return configs


@dataclass
class Tokens:
    tokenizer: Tokenizer
    lm: list[list[str]]  # the training texts first, then the unlabelled ones
    valid: list[list[str]]


def _fit_ulmfit(out: Path, configs: dict[str, FitConfig], data: FitData, resume: bool, log: Log) -> dict:
    """Both phases for every direction; returns the validation metrics (of the average, for two models)."""
    dirs, cache = list(configs), {}
    for d in dirs:
        _fit_direction(out, _folder(out, dirs, d), configs[d], d, data, cache, resume, log)
    if len(dirs) == 1:
        return json.loads(_done_file(out, dirs[0]).read_text())["metrics"]
    return _ensemble(out, configs, data, log)


def _done_file(out: Path, direction: str) -> Path:
    """Written when a direction's model is complete: a resumed `both` run does not train it again."""
    return out / "checkpoints" / f"{direction}-done.json"


def _fit_direction(out: Path, folder: Path, cfg: FitConfig, direction: str, data: FitData, cache: dict,
                   resume: bool, log: Log) -> None:
    if resume and _done_file(out, direction).exists():
        log(f"{model_dir.DIRECTION_NAMES[direction]} model: already trained, not trained again")
        return
    t0 = time.perf_counter()
    pretrained = model_dir.resolve_pretrained(cfg.pretrained_for(direction), direction)
    tokens = _tokens(pretrained, data, cache, log)
    vocab = Vocab.load(folder / "vocab.json") if resume and (folder / "vocab.json").exists() else None
    lm = finetune_lm(tokens.lm, folder, cfg.lm, tokenizer=tokens.tokenizer, vocab=vocab, pretrained=pretrained,
                     seed=cfg.seed, optimizer=cfg.optimizer, precision=cfg.precision, resume=resume,
                     direction=direction, log=log)
    _, metrics = train_classifier(lm, data.train, data.valid, data.classes, folder, cfg.clf, seed=cfg.seed,
                                  optimizer=cfg.optimizer, precision=cfg.precision, resume=resume,
                                  train_tokens=tokens.lm[:len(data.train.texts)], valid_tokens=tokens.valid,
                                  direction=direction, log=log)
    atomic_write_json(_done_file(out, direction), {"metrics": metrics, "seconds": time.perf_counter() - t0})


def _tokens(pretrained: Path | None, data: FitData, cache: dict, log: Log) -> Tokens:
    """The texts tokenized by the pretrained LM's tokenizer, once per distinct tokenizer config
    (the two directions of a run normally share it)."""
    tokenizer = model_dir.load_text_pipeline(pretrained)[0] if pretrained else Tokenizer(TokenizerConfig())
    key = json.dumps(asdict(tokenizer.config), sort_keys=True)
    if key not in cache:
        t0 = time.perf_counter()
        lm_tokens = tokenizer.tokenize_many(data.train.texts + data.unlabeled)
        cache[key] = Tokens(tokenizer, lm_tokens, tokenizer.tokenize_many(data.valid.texts))
        log(f"tokenized {len(lm_tokens):,} documents for the language model ({sum(map(len, lm_tokens)):,} tokens) "
            f"in {time.perf_counter() - t0:.1f}s")
    return cache[key]


def _ensemble(out: Path, configs: dict[str, FitConfig], data: FitData, log: Log) -> dict:
    """Validation metrics of each model and of their average; completes the backward sub-folder."""
    from ulmfit.recipes.predictor import Member, metrics_by_direction, proba_by_direction

    dirs = list(configs)
    members = [Member.load(_folder(out, dirs, d), d) for d in dirs]
    probs = proba_by_direction(members, data.valid.texts, len(data.classes))
    metrics = metrics_by_direction(probs, data.valid.labels, data.classes)
    for d in dirs[1:]:
        sub = _folder(out, dirs, d)
        seconds = json.loads(_done_file(out, d).read_text())["seconds"]
        write_reports(sub, metrics["by_direction"][d], data.classes, configs[d], seconds, direction=d)
        model_dir.write_marker(sub, "classifier", classes=data.classes, recipe="ulmfit", metric=configs[d].clf.metric,
                               direction=d, directions=[d])
        model_dir.remove_checkpoints(sub)
    log("validation macro-F1: " + ", ".join(f"{d} {m['macro_f1']:.4f}" for d, m in metrics["by_direction"].items())
        + f", averaged {metrics['macro_f1']:.4f}")
    return metrics


def _fit_siatl(out: Path, cfg: FitConfig, data: FitData, resume: bool, log: Log) -> dict:
    """SiATL (recipes/siatl.py) on the pretrained LM mapped to this run's vocabulary, not fine-tuned."""
    from ulmfit.recipes.siatl import train_siatl

    _seed_all(cfg.seed)
    pretrained = model_dir.resolve_pretrained(cfg.pretrained, "fwd")
    tokens = _tokens(pretrained, data, {}, log)
    vocab = (Vocab.load(out / "vocab.json") if resume and (out / "vocab.json").exists()
             else Vocab.build(tokens.lm, min_freq=cfg.lm.min_freq, max_vocab=cfg.lm.max_vocab))
    model_dir.save_text_pipeline(out, tokens.tokenizer.config, vocab)
    lm_train = replace(cfg.lm, drop_mult=cfg.siatl.drop_mult)
    if pretrained:
        pre_lm, _, pre_vocab = load_pretrained(pretrained, log)
        lm, lm_cfg = lm_from_pretrained(pre_lm, pre_vocab, vocab, lm_train, log)
    else:
        lm, lm_cfg = scratch_lm(vocab, lm_train)
    n = len(data.train.texts)
    unlabeled_docs = vocab.encode_many(tokens.lm[n:]) if len(tokens.lm) > n else None
    _, metrics = train_siatl(LMResult(lm, lm_cfg, tokens.tokenizer, vocab, []), data.train, data.valid, data.classes,
                             out, cfg.siatl, unlabeled_docs=unlabeled_docs, seed=cfg.seed, precision=cfg.precision,
                             resume=resume, train_tokens=tokens.lm[:n], log=log)
    return metrics


def write_reports(out: Path, metrics: dict, classes: list[str], cfg: FitConfig, seconds: float,
                  direction: str | None = None) -> None:
    """report.md, valid_metrics.json and the curves of a model folder. `direction`: the folder holds
    that one model of the run (the `bwd/` of a `both` run); default: all of the run's models."""
    dirs = [direction] if direction else cfg.directions
    records = [json.loads(l) for l in _read_lines(out / "history.jsonl")]
    curves = []
    for png, title, rs in (("history.png", "classifier", [r for r in records if r.get("phase") != "lm"]),
                           ("lm_history.png", "language model", [r for r in records if r.get("phase") == "lm"])):
        if rs:  # a SiATL run has no separate language-model phase
            plot_history(rs, out / png, title=title)
            curves.append(f"{png} ({title})")
    atomic_write_json(out / "valid_metrics.json", metrics)
    pretrained = "; ".join(f"{d} {model_dir.resolve_pretrained(cfg.pretrained_for(d), d) or 'none'}" for d in dirs)
    what = {"fwd": "forward", "bwd": "backward (documents read reversed)"}
    model = " + ".join(what[d] for d in dirs) + (", class probabilities averaged" if len(dirs) > 1 else "")
    text = (f"# ulmfit model report\n\nRecipe: {cfg.recipe}; model: {model}; pretrained: {pretrained}; "
            f"selection metric: {_metric(cfg)}; total time {seconds / 60:.1f} min.\n\n"
            f"## Validation set{' (averaged model)' if len(dirs) > 1 else ''}\n\n"
            f"{_direction_table(metrics)}```\n{format_report(metrics, classes)}\n```\n\n"
            f"Curves: {', '.join(curves) or 'none'}. Per-epoch figures: history.jsonl.\n")
    if len(dirs) > 1:
        text += "The backward model's own report, curves and history are in bwd/.\n"
    atomic_write_text(out / "report.md", text)


def _direction_table(metrics: dict) -> str:
    by = metrics.get("by_direction")
    if not by:
        return ""
    rows = [f"| {d} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for d, m in {**by, "averaged": metrics}.items()]
    return "| model | accuracy | macro-F1 |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"


def _read_lines(path: Path) -> list[str]:
    return [l for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def _resolve_config(out: Path, config: FitConfig | None, resume: bool, overwrite: bool) -> FitConfig:
    saved = out / "config.json"
    if resume:
        if not saved.exists():
            raise UlmfitError(f"{out}: nothing to resume (no config.json); start the run without --resume")
        return FitConfig.load(saved)
    if (out / "ulmfit.json").exists() and not overwrite:
        raise UlmfitError(f"{out} already holds a trained model; choose another --out, or pass --overwrite to replace it")
    if (out / "checkpoints").exists() and not overwrite:
        raise UlmfitError(f"{out} holds an interrupted run; pass --resume to continue it, or --overwrite to start again")
    if overwrite:
        for name in ("history.jsonl",):
            (out / name).unlink(missing_ok=True)
        model_dir.remove_checkpoints(out)
        shutil.rmtree(out / "bwd", ignore_errors=True)  # the backward model of an earlier `both` run
    return FitConfig.from_dict(asdict(config)) if config is not None else FitConfig()


def _path_or_none(x) -> str | None:
    return str(x) if isinstance(x, (str, Path)) else None
