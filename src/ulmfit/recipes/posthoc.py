"""The imbalance hooks of `ulmfit fit` (issue 21), for every recipe alike.

Before training, `resolve_weighting` turns each recipe's `class_weights: auto` into the rule used
(balanced, effective or none, by `train.calibration.weighting_rule`), so config.json records it.
After training, `finish` reads the finished model folder back through the predictor (so the
probabilities are exactly those `predict` will see), fits the temperature and the decision rule on
the validation split (`train.calibration.fit_posthoc`), saves them as `calibration.json`, compares the
model with the best constant predictor, and returns the validation metrics of the model as `predict`
and `evaluate` will use it. The arithmetic lives in `train/calibration.py`; this module only wires it.

Small label sets: `resolve_selection` turns a recipe's `cv: auto` into on or off (train/crossval.py
`use_cv`: on when the validation split has too few examples of some class), recorded in config.json.
A cross-validated run leaves `cv.json` in each model's folder; `finish` then fits on its out-of-fold
probabilities (every labelled row, predicted by a fold model that did not train on it) instead of a
validation split the model was trained on, and the report gets a "Cross-validated selection" section.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from ulmfit.fileio import atomic_write_json
from ulmfit.recipes import model_dir, registry
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.prepare import FitData
from ulmfit.errors import UlmfitError
from ulmfit.train.calibration import (apply, degenerate_check, fit_posthoc, imbalance_ratio, summary_lines,
                                      weighting_rule)
from ulmfit.train.crossval import smallest_class, use_cv
from ulmfit.train.metrics import classification_metrics

CALIBRATION_FILE = "calibration.json"
CV_FILE = "cv.json"  # written by a cross-validating recipe (recipes/ulmfit.py cv_classifier)


def resolve_weighting(cfg: FitConfig, data: FitData, log: Callable[[str], None]) -> FitConfig:
    """`cfg` with the `class_weights` of every recipe section resolved from "auto" for this training
    set (the run's recipe's is the one used; config.json records them all)."""
    k, labels = len(data.classes), data.train.labels
    out = FitConfig.from_dict(cfg.to_dict())
    for r in registry.recipes().values():
        section = getattr(cfg, r.section)
        if hasattr(section, "class_weights"):
            setattr(out, r.section, replace(section, class_weights=weighting_rule(section.class_weights, labels, k,
                                                                                  cfg.imbalance)))
    name = registry.get(cfg.recipe).section
    setting = getattr(cfg, name, None)
    if setting is None or not hasattr(setting, "class_weights"):
        return out
    used, setting = getattr(out, name).class_weights, setting.class_weights
    counts = "/".join(str(int(n)) for n in np.bincount(labels, minlength=k))
    if setting == "auto":
        ratio = imbalance_ratio(labels, k)
        why = f"largest/smallest class {ratio:.1f} {'>' if used != 'none' else '<='} imbalance.ratio {cfg.imbalance.ratio}"
        log(f"training labels {counts} ({', '.join(data.classes)}): {why}: loss weighting {used} "
            f"({name}.class_weights=auto; set it to none, balanced, effective or adjusted to choose)")
    else:
        log(f"training labels {counts} ({', '.join(data.classes)}): loss weighting {used} ({name}.class_weights)")
    return out


def resolve_selection(cfg: FitConfig, data: FitData, log: Callable[[str], None]) -> FitConfig:
    """`cfg` with the run's recipe section's `cv` resolved from "auto" (a recipe without the field
    does not cross-validate); one log line saying what was chosen and why."""
    name = registry.get(cfg.recipe).section
    section = getattr(cfg, name, None)
    if section is None or not hasattr(section, "cv"):
        return cfg
    k, smallest = len(data.classes), smallest_class(data.valid.labels, len(data.classes))
    on = use_cv(section.cv, data.valid.labels, k, section.cv_below)
    out = FitConfig.from_dict(cfg.to_dict())
    setattr(out, name, replace(section, cv="on" if on else "off"))
    if section.cv == "auto":
        why = (f"the validation split's rarest class has {smallest} examples, "
               f"{'<' if smallest < section.cv_below else '>='} {name}.cv_below {section.cv_below}")
        how = f"cross-validated ({section.cv_folds} folds)" if on else "on the validation split"
        log(f"selection: {why}: {how} ({name}.cv=auto; set it to on or off to choose)")
    else:
        log(f"selection: {'cross-validated' if on else 'on the validation split'} ({name}.cv={section.cv})")
    return out


def cv_held_out(folders: list[Path]) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The out-of-fold probabilities of each cross-validated model folder and the labels they are
    of; None when the models were selected on a validation split (no cv.json)."""
    if not (folders and all((f / CV_FILE).exists() for f in folders)):
        return None
    recs = [json.loads((f / CV_FILE).read_text()) for f in folders]
    labels = np.asarray(recs[0]["labels"], dtype=np.int64)
    if any(r["labels"] != recs[0]["labels"] or r["fold"] != recs[0]["fold"] for r in recs[1:]):
        raise UlmfitError(f"{folders[0].parent}: the models were cross-validated on different folds; retrain")
    return [np.asarray(r["oof_probs"], dtype=np.float32) for r in recs], labels


def finish(out: Path, data: FitData, cfg: FitConfig, metrics: dict, log: Callable[[str], None]) -> dict:
    """Fit and save calibration.json for the model in `out`; return its validation metrics (the
    decision rule's, with the argmax figures, the calibration and the constant-baseline check added)."""
    from ulmfit.recipes.predictor import BUILD_PRECISION, Member, average, proba_by_direction

    labels, classes, dirs = data.valid.labels, data.classes, cfg.directions
    folders = [model_dir.direction_folder(out, dirs[0], d) for d in dirs]
    held = cv_held_out(folders)
    if held is not None:  # cross-validated: every labelled row, out of fold (the model trained on all of them)
        raw, labels = average(dict(zip(dirs, held[0]))), held[1]
    else:
        members = [Member.load(f, d, cfg.recipe, BUILD_PRECISION) for f, d in zip(folders, dirs)]
        raw = average(proba_by_direction(members, data.valid.texts, len(classes)))  # as Classifier.predict_proba_raw
    post = fit_posthoc(raw, labels, classes, cfg.imbalance, cfg.seed)
    _, pred = apply(raw, post)
    argmax_check = degenerate_check(raw.argmax(1), labels, classes)
    check = degenerate_check(pred, labels, classes)
    post["constant_baseline"] = {**check, "argmax": argmax_check["model"]}
    atomic_write_json(out / CALIBRATION_FILE, post)
    for line in summary_lines(post, classes):
        log(line)
    log(check["message"] or f"the model beats the best constant predictor (always {check['constant']['class']!r}: "
                            f"macro-F1 {check['constant']['macro_f1']:.4f}, accuracy {check['constant']['accuracy']:.4f}) "
                            f"on validation: macro-F1 {check['model']['macro_f1']:.4f}, accuracy {check['model']['accuracy']:.4f}")
    new = {**metrics, **classification_metrics(labels, pred, classes)}  # the recipe's extras (by_direction, distill) kept
    a = classification_metrics(labels, raw.argmax(1), classes)
    new["argmax"] = {"accuracy": a["accuracy"], "macro_f1": a["macro_f1"],
                     "per_class_f1": {c: a["per_class"][c]["f1"] for c in classes}}
    if held is not None:
        new["cross_validated"] = cv_summary(folders[0])
    new.update(temperature=post["temperature"], calibration=post.get("calibration", "temperature"),
               calibration_bias=post.get("calibration_bias"), ece_before=post["valid"]["ece_before"],
               ece_after=post["valid"]["ece_after"], decision_rule=post["decision_rule"], bias=post["bias"],
               selection=post.get("selection"), constant_baseline=check["constant"], degenerate=check["degenerate"])
    return new


def report_section(out: Path, classes: list[str]) -> str:
    """The report's "Imbalance and calibration" section from the folder's calibration.json ('' if none)."""
    path = out / CALIBRATION_FILE
    if not path.exists():
        return ""
    post = json.loads(path.read_text())
    c = post["constant_baseline"]
    lines = summary_lines(post, classes)
    lines.append(c["message"] or (f"Best constant predictor on validation (always {c['constant']['class']!r}): macro-F1 "
                                  f"{c['constant']['macro_f1']:.4f}, accuracy {c['constant']['accuracy']:.4f}; the model: "
                                  f"{c['model']['macro_f1']:.4f}, {c['model']['accuracy']:.4f} (argmax alone: "
                                  f"{c['argmax']['macro_f1']:.4f}, {c['argmax']['accuracy']:.4f})."))
    lines.append("The figures below are the model's predictions as `predict` and `evaluate` make them (the decision "
                 "rule on the calibrated probabilities); calibration.json holds the calibration and the rule.")
    return cv_section(out) + "## Imbalance and calibration\n\n" + "\n".join(f"- {l}" for l in lines) + "\n\n"


def cv_summary(folder: Path) -> dict | None:
    """The figures of a folder's cross-validated selection (cv.json without its per-row arrays)."""
    path = folder / CV_FILE
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    return {k: v for k, v in rec.items() if k not in ("labels", "fold", "oof_probs")}


def cv_section(out: Path) -> str:
    """The report's "Cross-validated selection" section ('' when the model was selected on a
    validation split); the per-fold spread at the chosen epoch and over the folds' own best epochs."""
    c = cv_summary(out)
    if c is None:
        return ""
    at, m = c["at_epoch"], c["metric"]
    pick = c["epochs"].index(c["epoch"])  # the position of the chosen epoch in the curves
    curve = ", ".join(f"{e} {v:.3f}" for e, v in zip(c["epochs"], c["mean_curve"]))
    lines = [f"{c['rows']:,} labelled rows ({c['from_training']:,} training + {c['from_validation']:,} validation, pooled) "
             f"in {c['folds']} stratified folds; one model per fold trained on the others, validated on its fold "
             f"every epoch, without early stopping.",
             f"Mean validation {m} over the folds, by epoch: {curve}. Chosen: epoch {c['epoch']} ({c['stage']}); "
             f"the model was then trained on all rows and its weights after that epoch kept.",
             f"{m} of the {c['folds']} folds at epoch {c['epoch']}: mean {at['mean']:.4f}, sd {at['sd']:.4f}, "
             f"min {at['min']:.4f}, max {at['max']:.4f} (per fold: "
             + ", ".join(f"{cv[pick]:.4f}" for cv in c["fold_curves"]) + ").",
             f"Each fold's own best epoch: {', '.join(map(str, c['fold_best_epochs']))}.",
             f"Out of fold (argmax, before the decision rule): accuracy {c['out_of_fold']['accuracy']:.4f}, "
             f"macro-F1 {c['out_of_fold']['macro_f1']:.4f}. The temperature and decision rule below, and the "
             f"validation figures, are fitted on these out-of-fold probabilities ({c['switch']}=off: select on the "
             f"validation split instead)."]
    return "## Cross-validated selection\n\n" + "\n".join(f"- {l}" for l in lines) + "\n\n"
