"""`ulmfit fit`: read and prepare the data once, then run the chosen recipe into one model folder.

ULMFiT (recipes/ulmfit.py: `finetune_lm`, then `train_classifier`) once per direction; with
`direction="both"` forward then backward (every document read reversed), the backward model in
`bwd/`, and the classifier averages the two models' probabilities (ULMFiT §4, "bidirectional").
With `recipe="siatl"` the same prepared data goes to `recipes/siatl.py`. Resolved configs, reports,
the folder marker and resume bookkeeping live here, so both recipes share them.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.recipes import model_dir
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.prepare import FitData, load_fit_data
from ulmfit.recipes.ulmfit import (LMResult, Log, quiet, seed_all, finetune_lm, lm_from_pretrained, load_pretrained,
                                   scratch_lm, train_classifier)
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab
from ulmfit.train.checkpoint import atomic_write_json, atomic_write_text
from ulmfit.train.metrics import format_report
from ulmfit.train.plots import plot_history


def fit(train, valid=None, *, out: str | Path, text_col: str = "text", label_col: str = "label",
        unlabeled: list[str] | tuple = (), pretrained: str | None = "auto", config: FitConfig | None = None,
        resume: bool = False, overwrite: bool = False, log: Log = quiet):
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

    seed_all(cfg.seed)
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
