"""`fit`'s few-label path: a transformer model, its AWD-LSTM student, and the validated ensemble of the two.

A run with few labels and unlabelled text trains the model it would train anyway (the teacher, e.g. ULMFiT on
MiniLM), distils it into a forward + backward AWD-LSTM student over the unlabelled text (`ulmfit distill`'s
recipe, its defaults), and keeps the ensemble of the two by `ulmfit ensemble`'s rule with the "best member"
fallback (`ENSEMBLE_ANCHOR`; recipes/ensemble.py: the blend only when it beats the better member out of fold
beyond noise, else that member alone). This is the
path the log recommended (`ulmfit distill`, then `ulmfit ensemble`), now what `fit` does by itself (the
`student` setting: auto / on / off). The model folder:
```
OUT/ulmfit.json, report.md, valid_metrics.json, calibration.json   the ensemble (recipes/ensemble.py)
OUT/config.json        the run's config (student "on"): what --resume reads
OUT/members/m0/        the teacher: an ordinary model folder (its own report.md, config.json, curves)
OUT/members/m1/        the student: an ordinary model folder (recipe distill, direction both)
```
Each member trains like a run of its own and resumes where it stopped; the ensemble is written last.

When "auto" takes the path (`decide`): the run trains the transformer recipe with the ULMFiT objective (the
teacher measured), has unlabelled text, and has at most `FEW_LABELS` labelled training rows, in one process.
The evidence (docs/BENCHMARKS.md, "The few-label path as `fit`'s default"; test macro-F1; ULMFiT on MiniLM as
teacher, its fwd+bwd student):
* the founding user's 40/55/5 tweets, 500 labels, this path as `fit` runs it (5 seeds: 0, 1, 5, 6, 7): median
  0.6247 against the MiniLM model alone's 0.6063 (+1.9 and +1.8 on the 2 seeds where the rule blended; on 3 it
  kept the teacher alone: the same model), the 5% class 0.3468 against 0.3165; against frozen MiniLM + balanced LR (0.5962 / 0.3370)
  ahead on macro-F1 on 5 of 5 seeds and on the 5% class on the median (3 of 5 seeds), which the MiniLM model
  alone is not (8 seeds: 0.3231 vs 0.3381). The same steps run by hand on those samples (fourteenth session)
  gave 0.6202 / 0.3651. At 2,000 labels (seed 0) the rule kept the MiniLM model alone: no change in accuracy.
* the balanced tweets (eleventh session; ensembles then chosen by the argmax rule): 100 labels, median
  0.6309 against the MiniLM model's 0.6191 (the rule kept the student alone on 2 of 3 seeds); 500 labels
  level (0.6879 vs 0.6881); 2,000 labels 0.75 below (0.7263 vs 0.7338: a blend chosen on validation lost on
  test). So the line lies between 500 (gain or level) and 2,000 (a loss): `FEW_LABELS` 1,000.
* unlabelled text: measured with 21-29k unlabelled tweets beside 100-2,000 labels. Without it the student
  learns from the gold rows and their perturbed copies only (issue 17: 3 copies help with all labels); with
  few labels that was not measured, so "auto" needs unlabelled text.
The cost (AMD EPYC, one thread beside another one-thread run; 500 labels, 20,489 unlabelled tweets): 26-28 min
in all against 6-7 for the MiniLM model alone, about 4x (the student's two LMs 7.6 min, its two classifiers
5.6 min, the teacher's pass over 23.6k texts about 3 min). Prediction runs the AWD-LSTM pair beside MiniLM
where both carry weight (13-23x faster than MiniLM in bulk: `ulmfit evaluate` on the 2,623 test tweets took
41-42 s against 33-45 s for the MiniLM model alone). `--student off` gives the teacher alone (as before);
`ulmfit export` exports the members one by one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ulmfit.errors import UlmfitError
from ulmfit.ranks import world_size
from ulmfit.recipes import registry

SETTINGS = ("auto", "on", "off")  # the config field `student` (recipes/config.py) and `fit --student`
FEW_LABELS = 1_000  # "auto" takes the path with at most this many labelled training rows (evidence above)
TEACHER_DIR, STUDENT_DIR = "members/m0", "members/m1"  # recipes/ensemble.py's member folders
# The weight rule's fallback for the teacher and its own student (recipes/ensemble.py, `choose_weights`): the
# teacher unless a blend beats it beyond noise. Not `ulmfit ensemble`'s "top average": the student learnt the
# teacher's answers, so validation rarely tells them apart; on the 40/55/5 tweets (500 labels, seeds 6, 1, 5;
# docs/BENCHMARKS.md, twenty-first session) their plain average moved macro-F1 on held-out rows by +0.55, +0.26
# and -0.47 against this rule's choice, and lowered the 5% class's F1 on all three seeds.
ENSEMBLE_ANCHOR = "best member"
TRANSFORMER = "transformer"  # the transformer recipe (recipes/transformer_config.py), the teacher measured


def decide(cfg, data) -> tuple[bool, str]:
    """Whether the run (its config and its data, read: recipes/prepare.py `FitData`) takes the few-label
    path, and why in words (one log line). Refused in one line, before anything trains, where "on" cannot
    work; "auto" then says why not and trains the model alone."""
    from ulmfit.recipes.ensemble import FOLDS
    from ulmfit.train.crossval import use_cv

    setting, n_labelled, n_unlabeled, n_valid = cfg.student, len(data.train.labels), len(data.unlabeled), len(data.valid.labels)
    name = registry.get(cfg.recipe).section  # the run's recipe, resolved (`fit` calls this after auto_backbone)
    section = getattr(cfg, name)
    cv = hasattr(section, "cv") and use_cv(section.cv, data.valid.labels, len(data.classes), section.cv_below)
    refusals = (  # (the reason "auto" gives, the line "on" raises)
        (cfg.recipe == "distill", "a distill run is a student",
         "student=on: a distill run trains a student already; set student=off (or leave it auto)"),
        (n_unlabeled == 0, "no unlabelled text",
         "student=on needs unlabelled text to distil over: pass --unlabeled FILE (or --max-labels / --labels-per-class, "
         "whose other training rows become unlabelled text), or set --student off"),
        (world_size() > 1, "torchrun (the path trains in one process)",
         "student=on does not run under torchrun (distillation trains in one process); set --student off, or run "
         "without torchrun"),
        (n_valid < 2 * FOLDS, f"{n_valid} validation rows (the ensemble's weights need at least {2 * FOLDS})",
         f"student=on: the validation split has {n_valid} rows and the ensemble's weights need at least {2 * FOLDS}; "
         f"pass a larger --valid file, or set --student off"),
        (cv, "the model is selected by cross-validation (its validation rows are training rows then)",
         f"student=on: the model would be selected by cross-validation ({name}.cv), which trains "
         f"on the validation rows the ensemble's weights are chosen on; set {name}.cv=off, pass a "
         f"larger --valid file, or set --student off"),
    )
    if setting == "off":
        return False, "student=off"
    for refused, why, line in refusals:
        if refused:
            if setting == "on":
                raise UlmfitError(line)
            return False, why
    if setting == "on":
        return True, "student=on"
    if cfg.recipe != TRANSFORMER or cfg.transformer.objective != "ulmfit":
        return False, f"the run trains the {cfg.recipe} recipe (the path was measured with a transformer teacher)"
    if n_labelled > FEW_LABELS:
        return False, f"{n_labelled:,} labelled training rows (> {FEW_LABELS:,}: the student did not help there)"
    return True, f"{n_labelled:,} labelled training rows (<= {FEW_LABELS:,}) and {n_unlabeled:,} unlabelled texts"


def resolve(cfg, data, log: Callable[[str], None]):
    """`cfg` with `student` resolved to on or off (saved so, for --resume), and one log line saying which and why."""
    on, why = decide(cfg, data)
    if cfg.student == "auto":
        if on:
            log(f"few labels: {why}: this run also distils the model into a fast AWD-LSTM student over the unlabelled "
                f"text and keeps the validated ensemble of the two (recipes/few_labels.py: on the 40/55/5 tweets at 500 "
                f"labels, 5-seed medians, +1.8 macro-F1 and +3.0 on the 5% class over the model alone, for about 4x its "
                f"training time). --student off: the model alone")
        elif cfg.recipe == TRANSFORMER and len(data.unlabeled) and len(data.train.labels) <= FEW_LABELS:
            log(f"few labels: no student ({why}); the model alone")
    cfg.student = "on" if on else "off"
    return cfg


def teacher_config(cfg):
    """The teacher's run: the run's own config, trained as one model."""
    from ulmfit.recipes.config import FitConfig

    t = FitConfig.from_dict(cfg.to_dict())
    t.student = "off"
    return t


def student_config(cfg, teacher: Path):
    """The student's run: the run's config as `ulmfit distill --teacher TEACHER --direction both` (the
    path measured: distill's defaults, the shipped LMs; `--set distill.*`, `clf.*`, `lm.*` reach it)."""
    from dataclasses import replace

    from ulmfit.recipes.config import FitConfig

    s = FitConfig.from_dict(cfg.to_dict())
    s.recipe, s.direction, s.auto_choice, s.student = "distill", "both", None, "off"
    s.distill = replace(s.distill, teacher=str(Path(teacher).resolve()))
    return s


def preamble(cfg, n_labelled: int, n_unlabeled: int) -> str:
    """The ensemble report's first paragraph: how `fit` built this folder."""
    return (f"Built by `ulmfit fit`'s few-label path (student={cfg.student}; {n_labelled:,} labelled training rows, "
            f"{n_unlabeled:,} unlabelled texts): {TEACHER_DIR} is the {cfg.recipe} model (its own report: "
            f"{TEACHER_DIR}/report.md), {STUDENT_DIR} its forward + backward AWD-LSTM student distilled over the "
            f"unlabelled texts ({STUDENT_DIR}/report.md). `--student off` trains the first alone.\n\n")
