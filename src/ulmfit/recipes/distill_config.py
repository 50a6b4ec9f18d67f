"""The distillation recipe's registration and its section (`distill` in config.json).

`ulmfit distill --teacher DIR ...` is `ulmfit fit --recipe distill --set distill.teacher=DIR ...`:
a teacher (any classifier folder) -> an AWD-LSTM student (forward, backward, or one per direction
averaged: `--direction`, default both: see `default_direction` below), or self-training (recipes/distill.py,
torch). The student's LM and classifier settings are the `lm` and `clf` sections, as for `ulmfit`;
this section holds what is particular to distillation. Torch-free, like every config module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ulmfit.recipes import fields as F
from ulmfit.recipes.registry import Recipe, lazy, register


@dataclass
class DistillConfig:
    # The teacher's model folder (`--teacher`): any classifier folder `ulmfit.load` opens. Recorded as
    # an absolute path, so `--resume` and `--config` repeat the run.
    teacher: str | None = None
    # Softening of both distributions in the soft term (Hinton et al. 2015 use 1-20; small values suit
    # few classes: at T=2 a 0.9/0.05/0.05 teacher becomes 0.68/0.16/0.16, enough to show the runner-up).
    temperature: float = F.spec(2.0, gt=0)
    # Weight of the soft term; (1 - alpha) goes to cross-entropy on the gold labels. Unlabelled rows
    # have only the soft term. 0.5: Hinton et al.'s equal mix; 0 is plain ULMFiT on the gold rows.
    alpha: float = F.spec(0.5, ge=0, le=1)
    # Unlabelled rows whose teacher confidence (largest class probability) is below this are left out
    # of the student's training set (pseudo-labels only above it). 0: every unlabelled row.
    threshold: float = F.spec(0.0, ge=0, lt=1)
    # Unlabelled rows in the student's training set: None = all of them (mixed into every epoch by the
    # sortish loader, so each batch holds gold and unlabelled rows in about the data's proportion);
    # a number r = a fixed, seeded random r x n_gold of them (fewer steps per epoch).
    unlabeled_ratio: float | None = F.spec(None, ge=0)
    # Self-training / repeated distillation: round k's student is round k+1's teacher; the last round's
    # student is the model folder. 1 = one student from the given teacher.
    rounds: int = F.spec(1, ge=1)
    # Perturbed copies of each gold and kept unlabelled text (data/augment.py, Tang et al. 2019 section
    # 3.3: words dropped or replaced, n-grams cut out), labelled by the teacher alone and trained on
    # like unlabelled rows; each copy costs a teacher prediction and a student row per epoch. 0: none.
    # "auto" (`augment_copies`): AUTO_COPIES when the run has no unlabelled text, else none.
    augment: int | str = F.spec(F.AUTO, ge=0, choices=(F.AUTO,))
    chunk_size: int = F.spec(1024, ge=1)  # texts per teacher-cache chunk: the unit an interrupted teacher pass resumes from
    teacher_bs: int = F.batch_size(128)  # texts per teacher forward pass (when its predict_proba takes `bs`)
    # The student's model selection, against the GOLD validation labels (every other classifier
    # setting of the student is the `clf` section's).
    metric: str = F.metric()

    BEFORE: ClassVar[dict] = {"augment": 0}  # a saved run that predates the field: its value then (config.py)

    def __post_init__(self) -> None:
        F.check(self, "distill")


# augment "auto": with no unlabelled text the transfer set is the gold rows alone, too few to show the
# student the teacher's function. Measured (docs/BENCHMARKS.md, "Twelfth session: perturbed copies"):
# all 29,757 tweet labels, no unlabelled text, MiniLM teacher, seed 0: 3 copies per text raised the
# fwd+bwd student's validation macro-F1 from 0.7451 to 0.7632 and test from 0.7550 to 0.7626. With
# unlabelled text the user's own texts are the transfer set (copies unmeasured there: none by default).
AUTO_COPIES = 3


def augment_copies(setting: int | str, n_unlabeled: int) -> tuple[int, str]:
    """The copies per text a run makes, and why in words (for the log and the report)."""
    if setting != F.AUTO:
        return int(setting), f"distill.augment={setting}"
    if n_unlabeled == 0:
        return AUTO_COPIES, f"distill.augment=auto: {AUTO_COPIES}, the run has no unlabelled text"
    return 0, "distill.augment=auto: none, the run has unlabelled text"


def _check_run(d: DistillConfig) -> None:
    """Before any data is read: a teacher is named and is a classifier folder (its marker, read as JSON)."""
    if not d.teacher:
        F.fail("distill", "teacher", d.teacher, "name the teacher model folder: ulmfit distill --teacher DIR "
                                                "(or --set distill.teacher=DIR)")
    marker = Path(d.teacher) / "ulmfit.json"
    try:
        kind = json.loads(marker.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        F.fail("distill", "teacher", d.teacher, "not a model folder (no readable ulmfit.json); pass the --out "
                                                "folder of `ulmfit fit` or another classifier")
    if kind != "classifier":
        F.fail("distill", "teacher", d.teacher, f"holds a {kind} model; a teacher is a classifier folder")


RECIPE = register(Recipe(
    name="distill", section="distill", config=DistillConfig,  # fwd, bwd, or both (two students averaged)
    fit=lazy("ulmfit.recipes.distill", "fit_recipe"), load_model=lazy("ulmfit.recipes.model_dir", "load_classifier_model"),
    check=_check_run, report=lazy("ulmfit.recipes.distill", "report_section"),
    # both: one student per direction, averaged. Measured (docs/BENCHMARKS.md, "Sixth session: a fwd+bwd
    # student"): at 500 tweet labels the fwd+bwd student is within 1 macro-F1 point of its MiniLM teacher
    # on each of 3 seeds (-0.47, +0.44, +0.63) where the forward one alone missed (-1.14); the second
    # direction adds ~0.7-1.1 points at 100, 500 and 2,000 labels; it is still 23x faster than the
    # teacher in bulk (the forward one 38.6x), and with 2 threads both train side by side in the wall
    # time of one. `--direction fwd` gives the fastest student. (`ulmfit fit` keeps fwd.)
    default_direction="both",
    summary="distillation / self-training: a teacher's soft targets on your unlabelled text -> a fast AWD-LSTM student (fwd, bwd or both averaged)"))
