"""The imbalance hooks of `ulmfit fit` (issue 21), for every recipe alike.

Before training, `resolve_weighting` turns each recipe's `class_weights: auto` into the rule used
(balanced, effective or none, by `train.calibration.weighting_rule`), so config.json records it.
After training, `finish` reads the finished model folder back through the predictor (so the
probabilities are exactly those `predict` will see), fits the temperature and the decision rule on
the validation split (`train.calibration.fit_posthoc`), saves them as `calibration.json`, compares the
model with the best constant predictor, and returns the validation metrics of the model as `predict`
and `evaluate` will use it. The arithmetic lives in `train/calibration.py`; this module only wires it.
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
from ulmfit.train.calibration import (apply, degenerate_check, fit_posthoc, imbalance_ratio, summary_lines,
                                      weighting_rule)
from ulmfit.train.metrics import classification_metrics

CALIBRATION_FILE = "calibration.json"


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
            f"({name}.class_weights=auto; set it to none, balanced or effective to choose)")
    else:
        log(f"training labels {counts} ({', '.join(data.classes)}): loss weighting {used} ({name}.class_weights)")
    return out


def finish(out: Path, data: FitData, cfg: FitConfig, metrics: dict, log: Callable[[str], None]) -> dict:
    """Fit and save calibration.json for the model in `out`; return its validation metrics (the
    decision rule's, with the argmax figures, the calibration and the constant-baseline check added)."""
    from ulmfit.recipes.predictor import Member, average, proba_by_direction

    labels, classes, dirs = data.valid.labels, data.classes, cfg.directions
    members = [Member.load(model_dir.direction_folder(out, dirs[0], d), d, cfg.recipe) for d in dirs]
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
    new.update(temperature=post["temperature"], ece_before=post["valid"]["ece_before"],
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
                 "rule on the calibrated probabilities); calibration.json holds T and the rule.")
    return "## Imbalance and calibration\n\n" + "\n".join(f"- {l}" for l in lines) + "\n\n"
