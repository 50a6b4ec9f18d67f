"""`ulmfit fit`: read and prepare the data once, then run the chosen recipe into one model folder.

The recipe comes from the registry (recipes/registry.py): `get(cfg.recipe).fit(run)` trains into
the folder and returns the validation metrics; a config that names none ("auto") runs the recipe
recipes/auto_backbone.py chooses from the training texts, saved resolved. Resolved configs (one per model direction), reports,
the folder marker and resume bookkeeping live here, so every recipe shares them.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json, atomic_write_text, make_dir, remove
from ulmfit.recipes import auto_backbone, few_labels, model_dir, posthoc, registry
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.prepare import load_fit_data
from ulmfit.recipes.toolbox import Log, quiet
from ulmfit.train import distributed
from ulmfit.train.metrics import format_report
from ulmfit.train.plots import plot_history
from ulmfit.train import device
from ulmfit.train.precision import describe_precision


def fit(train, valid=None, *, out: str | Path, text_col: str = "text", label_col: str = "label",
        unlabeled: list[str] | tuple = (), pretrained: str | None = "auto", config: FitConfig | None = None,
        resume: bool = False, overwrite: bool = False, log: Log = quiet):
    """Train a classifier end to end with the config's recipe and return the loaded model (see `ulmfit.load`).
    No recipe chosen (the default, "auto"): MiniLM for short texts when the transformers extra is
    installed, else the AWD-LSTM (recipes/auto_backbone.py); `FitConfig(recipe="ulmfit")` pins the AWD-LSTM.
    With few labels and unlabelled text a transformer model comes with its distilled AWD-LSTM student and the
    two's validated ensemble (recipes/few_labels.py); `FitConfig(student="off")` trains the model alone."""
    from ulmfit.recipes.predictor import Classifier

    out = Path(out)
    with model_dir.writing(out, resume=resume, overwrite=overwrite) as work:
        _fit_into(work, train, valid, text_col, label_col, unlabeled, pretrained, config, resume, log)
    distributed.barrier()  # [distributed] rank 0 completed (and swapped in) the folder before any rank loads it
    return Classifier(out)


def _fit_into(out: Path, train, valid, text_col, label_col, unlabeled, pretrained, config, resume, log) -> None:
    """The whole run into `out` (the model folder, or the staging folder of an --overwrite)."""
    cfg = _resolve_config(out, config, resume)
    distributed.barrier()  # [distributed] every rank checked the folder before rank 0 writes into it
    if config is None and not resume:
        cfg.data = replace(cfg.data, text_col=text_col, label_col=label_col)
        cfg.pretrained = pretrained if pretrained is not None else cfg.pretrained
    cfg.data = replace(cfg.data, train=_path_or_none(train), valid=_path_or_none(valid),
                       unlabeled=[str(u) for u in unlabeled] or cfg.data.unlabeled)
    cfg = auto_backbone.settle(cfg, resume)
    chosen = cfg.recipe != auto_backbone.AUTO  # else the training texts choose it, once read
    if chosen:
        _recipe_and_configs(out, cfg, resume)  # checks the pretrained LMs before reading any data
    t0 = time.perf_counter()
    data = load_fit_data(train, valid, cfg.data, cfg.seed, log)
    if not chosen:
        cfg = auto_backbone.choose(cfg, data.train.texts, log)
    cfg = few_labels.resolve(cfg, data, log)
    if cfg.student == "on":
        _fit_with_student(out, cfg, data, resume, log)
    else:
        _train_model(out, cfg, data, resume, log, t0)


def _train_model(out: Path, cfg: FitConfig, data, resume: bool, log: Log, t0: float) -> None:
    """One model (one recipe, one or two directions) into `out`, its data read: train, post-hoc, reports, marker."""
    recipe, configs = _recipe_and_configs(out, cfg, resume)
    dirs = cfg.directions
    log(f"device: {device.describe()}; precision: {describe_precision(cfg.precision, device.training_device().type)}")
    configs = {d: posthoc.resolve_weighting(c, data, log if i == 0 else quiet) for i, (d, c) in enumerate(configs.items())}
    configs = {d: posthoc.resolve_selection(c, data, log if i == 0 else quiet) for i, (d, c) in enumerate(configs.items())}
    for d, c in configs.items():
        make_dir(_folder(out, dirs, d))
        atomic_write_json(_folder(out, dirs, d) / "config.json", c.to_dict())
    metrics = recipe.fit(registry.Run(out, configs, data, resume, log))
    marker = dict(classes=data.classes, recipe=cfg.recipe, metric=_metric(cfg), direction=dirs[0], directions=dirs)
    # The post-hoc step loads the trained models the way the predictor does, and a recipe's load_model
    # may read the marker (docs/DESIGN.md, "Add a recipe"): the marker goes first, and again last.
    model_dir.write_marker(out, "classifier", **marker)
    try:
        metrics = posthoc.finish(out, data, configs[dirs[0]], metrics, log)  # calibration.json, constant baseline
    except BaseException:
        remove(out / "ulmfit.json")  # not complete: --resume finishes it
        raise
    write_reports(out, metrics, data.classes, configs[dirs[0]], time.perf_counter() - t0)
    model_dir.write_marker(out, "classifier", **marker)
    model_dir.remove_checkpoints(out)


def _fit_with_student(out: Path, cfg: FitConfig, data, resume: bool, log: Log) -> None:
    """The few-label path (recipes/few_labels.py): the teacher into members/m0, its student into members/m1,
    each resumed where it stopped (or kept, when whole), then the ensemble of the two into `out`, last."""
    from ulmfit.recipes.ensemble import write_ensemble

    atomic_write_json(out / "config.json", cfg.to_dict())  # the run's: what --resume reads
    teacher, student = out / few_labels.TEACHER_DIR, out / few_labels.STUDENT_DIR
    steps = ((teacher, few_labels.teacher_config(cfg), f"the {cfg.recipe} model (the teacher)"),
             (student, few_labels.student_config(cfg, teacher), "its AWD-LSTM student (fwd + bwd)"))
    for i, (folder, member_cfg, what) in enumerate(steps, 1):
        if model_dir.finished(folder):
            log(f"few labels, step {i} of 3: {what} in {folder} is trained already: kept")
            continue
        again = resume and (folder / "config.json").exists()
        log(f"few labels, step {i} of 3: {what} into {folder}{' (resumed)' if again else ''}")
        make_dir(folder)
        t0 = time.perf_counter()
        _train_model(folder, FitConfig.load(folder / "config.json", resuming=True) if again else member_cfg,
                     data, again, log, t0)
    log("few labels, step 3 of 3: the ensemble of the two, weights chosen on the validation split")
    n_lab, n_unl = len(data.train.labels), len(data.unlabeled)
    write_ensemble(out, ["the teacher, trained by this run", "its student, distilled by this run"], data.valid.texts,
                   [data.classes[i] for i in data.valid.labels], data.valid.source, data.valid.source, log=log,
                   names=["teacher", "student"], preamble=few_labels.preamble(cfg, n_lab, n_unl),
                   anchor=few_labels.ENSEMBLE_ANCHOR)


def _recipe_and_configs(out: Path, cfg: FitConfig, resume: bool) -> tuple[registry.Recipe, dict[str, FitConfig]]:
    """The run's recipe and its per-direction configs, each checked by the recipe."""
    recipe = _check_recipe(cfg)
    configs = _direction_configs(out, cfg, resume)
    for c in configs.values():
        if recipe.check:
            recipe.check(getattr(c, recipe.section))
    return recipe, configs


def _check_recipe(cfg: FitConfig) -> registry.Recipe:
    recipe = registry.get(cfg.recipe)
    if distributed.world_size() > 1 and recipe.name != "ulmfit":  # [distributed] the one recipe tested exact
        raise UlmfitError(f"--recipe {recipe.name} does not run under torchrun yet (only --recipe ulmfit does); "
                          f"train it in one process")
    if cfg.direction not in recipe.directions:
        raise UlmfitError(f"--recipe {recipe.name} supports --direction {' or '.join(recipe.directions)} only")
    return recipe


def _metric(cfg: FitConfig) -> str:
    return cfg.recipe_section.metric


def _folder(out: Path, dirs: list[str], direction: str) -> Path:
    return model_dir.direction_folder(out, dirs[0], direction)


def _direction_configs(out: Path, cfg: FitConfig, resume: bool) -> dict[str, FitConfig]:
    """Each model's config with its "auto" values resolved (fine-tuning or scratch values, per its
    own pretrained LM). Saved as config.json of its folder before training, so --resume reuses them."""
    configs = {}
    for d in cfg.directions:
        saved = _folder(out, cfg.directions, d) / "config.json"
        configs[d] = FitConfig.load(saved, resuming=True) if resume and saved.parent != out and saved.exists() else cfg.resolved(d)
    return configs


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
    if hasattr(cfg.recipe_section, "backbone"):  # a recipe on its own pretrained encoder (the transformer's)
        pretrained = f"transformer backbone {cfg.recipe_section.backbone}"
    elif not registry.get(cfg.recipe).pretrained_lm:  # a recipe that reads no language model (TF-IDF)
        pretrained = "none"
    what = {"fwd": "forward", "bwd": "backward (documents read reversed)"}
    model = " + ".join(what[d] for d in dirs) + (", class probabilities averaged" if len(dirs) > 1 else "")
    chosen = (f"Backbone chosen automatically (nothing in the run chose the model; --backbone chooses it): "
              f"{cfg.auto_choice}.\n\n" if cfg.auto_choice else "")
    text = (f"# ulmfit model report\n\nRecipe: {cfg.recipe}; model: {model}; pretrained: {pretrained}; "
            f"selection metric: {_metric(cfg)}; total time {seconds / 60:.1f} min.\n\n{chosen}"
            f"{posthoc.report_section(out, classes)}"
            f"## {'Out of fold (every labelled row, cross-validated)' if metrics.get('cross_validated') else 'Validation set'}"
            f"{' (averaged model)' if len(dirs) > 1 else ''}\n\n"
            f"{_direction_table(metrics)}```\n{format_report(metrics, classes)}\n```\n\n"
            f"Curves: {', '.join(curves) or 'none'}. Per-epoch figures: history.jsonl.\n")
    if len(dirs) > 1:
        text += "The backward model's own report, curves and history are in bwd/.\n"
    extra = registry.get(cfg.recipe).report
    if extra is not None:
        text += extra(metrics)
    atomic_write_text(out / "report.md", text)


def _direction_table(metrics: dict) -> str:
    by = metrics.get("by_direction")
    if not by:
        return ""
    rows = [f"| {d} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for d, m in {**by, "averaged": metrics}.items()]
    return "| model | accuracy | macro-F1 |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"


def _read_lines(path: Path) -> list[str]:
    return [l for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def _resolve_config(out: Path, config: FitConfig | None, resume: bool) -> FitConfig:
    """`out` is where this run writes (model_dir.writing chose it: a fresh or staging folder for
    --overwrite, the interrupted run's folder for --resume)."""
    saved = out / "config.json"
    if resume:
        if not saved.exists():
            raise UlmfitError(f"{out}: nothing to resume (no config.json); start the run without --resume")
        return FitConfig.load(saved, resuming=True)
    if (out / "ulmfit.json").exists():
        raise UlmfitError(f"{out} already holds a trained model; choose another --out, or pass --overwrite to replace it")
    if (out / "checkpoints").exists() or (out / "config.json").exists():
        raise UlmfitError(f"{out} holds an interrupted run; pass --resume to continue it, or --overwrite to start again")
    return FitConfig.from_dict(config.to_dict()) if config is not None else FitConfig()


def _path_or_none(x) -> str | None:
    return str(x) if isinstance(x, (str, Path)) else None
