"""`ulmfit distill`: a teacher's knowledge into a fast AWD-LSTM student, and self-training.

The recipe "distill" of the registry (registered in recipes/distill_config.py with its `distill`
section): `ulmfit distill --teacher DIR` is `ulmfit fit --recipe distill --set distill.teacher=DIR`,
so data preparation, config checks, resume, reports and the marker are `fit`'s; `fit_recipe` below
is what differs.

1. The data as `ulmfit fit` reads it (recipes/prepare.py): the gold rows (a stratified, seeded
   sample with `--max-labels` / `--labels-per-class`, the other training rows' texts becoming
   unlabelled), the validation set, the `--unlabeled` texts.
2. The teacher (any classifier folder, see recipes/teacher.py) gives class probabilities for every
   gold, unlabelled and validation text, cached in `<student>/teacher/`.
3. One student per direction of the run (`--direction fwd | bwd | both`), each started the ULMFiT
   way: its language model fine-tuned on the gold and unlabelled text (`finetune_lm`; general-en /
   general-en-bwd by default), then its classifier trained by `train_classifier` with the teacher's
   soft targets (train/distill.py `DistillTask`: gold rows cross-entropy + soft term, unlabelled rows
   the soft term only), gradual unfreezing, selection by `distill.metric` (macro-F1) against the
   GOLD validation labels. The per-direction loop, the two-process plan and the average are
   `ulmfit fit`'s (recipes/ulmfit.py `fit_directions`); the teacher's probabilities are computed
   once, before the students, and shared by both directions.
4. `augment` ("auto": 3 when the run has no unlabelled text, else 0; recipes/distill_config.py):
   perturbed copies of the gold and kept unlabelled texts (data/augment.py, Tang et al. 2019) join
   the unlabelled rows, labelled by a second teacher pass (cached in `<student>/teacher/augment/`).
5. `rounds > 1` (self-training): round k's student is round k+1's teacher; with `both`, the
   averaged fwd+bwd student of round k (a folder with its `bwd/` sub-folder, as `fit --direction
   both` writes) teaches round k+1. Each direction's language model is fine-tuned once (round 1)
   and shared by every round. `threshold` keeps only unlabelled rows the teacher is confident about.

The result is an ordinary classifier folder (forward, backward, or fwd+bwd with `bwd/`: predict,
evaluate, load and serve unchanged) whose report adds teacher-vs-student agreement and both
models' validation metrics (with `both`: each student's and the averaged student's).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from ulmfit.data.augment import augment
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json, atomic_write_npy, mapped, staging_path
from ulmfit.recipes import model_dir
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.distill_config import augment_copies
from ulmfit.recipes.fit import write_reports
from ulmfit.recipes.predictor import Member, _read_calibration, average, bias_in
from ulmfit.recipes.registry import Run
from ulmfit.recipes.registry import get as get_recipe
from ulmfit.recipes.teacher import teacher_probabilities
from ulmfit.recipes.toolbox import Log, quiet, tokens_for
from ulmfit.recipes.ulmfit import finetune_lm, fit_directions, pretrained_lm, train_classifier
from ulmfit.text.vocab import Vocab
from ulmfit.train.calibration import decide
from ulmfit.train.distill import SoftTargets
from ulmfit.train.metrics import classification_metrics


def distill(teacher=None, train=None, valid=None, *, out: str | Path, text_col: str = "text", label_col: str = "label",
            unlabeled: list[str] | tuple = (), pretrained: str | None = "auto", direction: str | None = None,
            pretrained_bwd: str | None = None, config: FitConfig | None = None, resume: bool = False,
            overwrite: bool = False, log: Log = quiet):
    """Train an AWD-LSTM student on `teacher`'s soft targets plus the gold labels; returns the loaded
    student (see `ulmfit.load`). `ulmfit.fit` with recipe "distill" and `distill.teacher` set: the
    same data preparation, config checks, reports, marker and resume. `teacher`: a classifier folder
    (with `resume`: the interrupted run's, from its config.json). `direction` ("fwd", "bwd" or "both":
    one student per direction, their probabilities averaged) and `pretrained_bwd` (the backward
    student's LM with "both") win over `config`'s, as the CLI's flags do. With neither `direction`
    nor `config`: the recipe's default direction, "both" (recipes/distill_config.py); with a
    `config`, its `direction`."""
    from ulmfit.recipes.fit import fit

    if resume:
        work = model_dir.resume_folder(out)  # the staging folder of an interrupted --overwrite, else out
        saved = FitConfig.load(work / "config.json", resuming=True) if (work / "config.json").exists() else None
        train = train if train is not None else (saved.data.train if saved else None)
        valid = valid if valid is not None else (saved.data.valid if saved else None)
        return fit(train, valid, out=out, unlabeled=unlabeled, resume=True, log=log)
    cfg = FitConfig.from_dict(config.to_dict()) if config is not None else FitConfig()
    if config is None:
        cfg.data = replace(cfg.data, text_col=text_col, label_col=label_col)
        cfg.pretrained = pretrained if pretrained is not None else cfg.pretrained
    cfg.recipe = "distill"
    # no direction and no config: the recipe's default (both, recipes/distill_config.py); a config's own direction stands
    cfg.direction = direction or (cfg.direction if config is not None else get_recipe("distill").default_direction)
    if pretrained_bwd is not None:
        if cfg.direction != "both":
            raise UlmfitError(f"pretrained_bwd is for direction='both'; with direction {cfg.direction!r} pass the "
                              "language model as pretrained")
        cfg.pretrained_bwd = pretrained_bwd
    teacher = teacher if teacher is not None else cfg.distill.teacher
    cfg.distill = replace(cfg.distill, teacher=str(Path(teacher).resolve()) if teacher else None)
    return fit(train, valid, out=out, unlabeled=unlabeled, config=cfg, overwrite=overwrite, log=log)


def fit_recipe(run: Run) -> dict:
    """The registered recipe: `distill.rounds` rounds (round k's student teaches round k+1); returns
    the last student's validation metrics (of the average, for fwd+bwd) with `distill` (every round)."""
    cfg, data, out, log = run.configs[next(iter(run.configs))], run.data, run.out, run.log
    teacher = Path(cfg.distill.teacher)
    meta = model_dir.read_marker(teacher)  # the one folder validator: a broken marker is one line
    if sorted(meta["classes"]) != data.classes:
        raise UlmfitError(f"--teacher {teacher}: the teacher predicts classes {meta['classes']} but the training "
                          f"data has {data.classes}; distill from a teacher trained on the same labels")
    rounds, teacher_r = [], teacher
    for r in range(1, cfg.distill.rounds + 1):
        final = r == cfg.distill.rounds
        folder = out if final else out / "checkpoints" / f"round-{r}"
        done = out / "checkpoints" / f"round-{r}-done.json"
        if run.resume and done.exists():
            log(f"distillation round {r}: already trained, not trained again")
            info = json.loads(done.read_text())
        else:
            info = _round(r, folder, teacher_r, run, final)
            atomic_write_json(done, info)
        rounds.append(info)
        teacher_r = folder
    return {**rounds[-1]["student"], "distill": rounds}


def select_unlabeled(teacher_probs: np.ndarray, threshold: float, ratio: float | None, n_gold: int,
                     seed: int) -> np.ndarray:
    """Sorted indices of the unlabelled rows the student trains on: those whose teacher confidence
    (largest probability) is at least `threshold`; then, with `ratio`, a seeded random
    round(ratio * n_gold) of them."""
    conf = np.asarray(teacher_probs).max(1) if len(teacher_probs) else np.zeros(0)
    keep = np.flatnonzero(conf >= threshold)
    if ratio is not None and len(keep) > round(ratio * n_gold):
        rng = np.random.default_rng([seed, 17])
        keep = np.sort(rng.choice(keep, size=round(ratio * n_gold), replace=False))
    return keep


def _round(r: int, folder: Path, teacher: Path, run: Run, final: bool) -> dict:
    """Round r: the teacher's probabilities once (here, cached in `folder/teacher`), then one student
    per direction of the run (`_student`, through recipes/ulmfit.py `fit_directions`: one after the
    other or in two processes, averaged for fwd+bwd) into `folder`; returns the round's record.
    `final`: `folder` is the run's own folder (its report and marker are written by `fit`); else an
    intermediate round's folder, completed here as a model folder (the next round's teacher: for
    fwd+bwd a folder whose two students are averaged, as a `fit --direction both` folder)."""
    t0 = time.perf_counter()
    dirs, data, log = list(run.configs), run.data, run.log
    cfg = run.configs[dirs[0]]
    d = cfg.distill
    classes = data.classes
    n_gold, n_unl = len(data.train.texts), len(data.unlabeled)
    folder.mkdir(parents=True, exist_ok=True)
    texts = data.train.texts + data.unlabeled + data.valid.texts
    log(f"distillation round {r}/{d.rounds}: teacher {teacher}")
    if final:
        _carry_cache(folder)
    probs = teacher_probabilities(teacher, texts, folder / "teacher", classes, chunk_size=d.chunk_size,
                                  bs=d.teacher_bs, log=log)
    p_gold, p_unl, p_valid = probs[:n_gold], probs[n_gold:n_gold + n_unl], probs[n_gold + n_unl:]
    keep = select_unlabeled(p_unl, d.threshold, d.unlabeled_ratio, n_gold, cfg.seed)
    log(f"round {r}: {len(keep):,} of {n_unl:,} unlabelled texts join the {n_gold:,} gold rows "
        f"(threshold {d.threshold}, ratio {'all' if d.unlabeled_ratio is None else d.unlabeled_ratio}); "
        f"temperature {d.temperature}, alpha {d.alpha}")
    copies, why = augment_copies(d.augment, n_unl)
    aug, p_aug = _augmented(data.train.texts + [data.unlabeled[i] for i in keep], copies, teacher, folder, cfg,
                            classes, log)
    if copies:
        log(f"round {r}: {len(aug):,} perturbed copies of them ({why}; at most {copies} per text, threshold "
            f"{d.threshold}) join as unlabelled rows")
    soft = np.concatenate([np.asarray(p_gold), np.asarray(p_unl)[keep], p_aug]).astype(np.float32)
    student = partial(_student, root=run.out, r=r, soft=soft, keep=keep, aug=aug)
    metrics = fit_directions(replace(run, out=folder), student, recipe="distill")
    s_probs = {x: np.load(_probs_file(folder, x)) for x in dirs}  # each student's [valid + unlabelled] probabilities
    teacher_metrics = classification_metrics(data.valid.labels, _teacher_labels(teacher, p_valid, classes), classes)
    info = {
        "round": r, "teacher": str(teacher), "directions": dirs, "student": metrics, "teacher_metrics": teacher_metrics,
        "agreement": _agreement(average(s_probs), p_valid, p_unl),
        "n_gold": n_gold, "n_unlabeled": n_unl, "n_unlabeled_used": int(len(keep)),
        "augment": copies, "augment_reason": why, "n_augmented": len(aug),
        "temperature": d.temperature, "alpha": d.alpha, "threshold": d.threshold,
        "unlabeled_ratio": d.unlabeled_ratio, "seconds": round(time.perf_counter() - t0, 1),
    }
    if len(dirs) > 1:  # each student alone; `student` and `agreement` above are the averaged student's
        info["by_direction"] = {x: {"student": metrics["by_direction"][x], "agreement": _agreement(p, p_valid, p_unl)}
                                for x, p in s_probs.items()}
    agree = info["agreement"]
    # the student's own decision rule is fitted after training (recipes/posthoc.py; the model's figure in
    # the log's last lines and the report), the teacher's is in its folder: say which figure is which
    log(f"round {r}: validation macro-F1 student {metrics['macro_f1']:.4f} on its argmax"
        + (" (fwd+bwd averaged)" if len(dirs) > 1 else "") + f", teacher {teacher_metrics['macro_f1']:.4f} "
        f"with its decision rule; "
        f"agreement {agree['valid']:.3f} on validation"
        + (f", {agree['unlabeled']:.3f} on the unlabelled texts" if n_unl else ""))
    if not final:
        write_reports(folder, {**metrics, "distill": [info]}, classes, cfg, info["seconds"])
        model_dir.write_marker(folder, "classifier", classes=classes, recipe="distill", metric=cfg.distill.metric,
                               direction=dirs[0], directions=dirs)
        model_dir.remove_checkpoints(folder)
    return info


def _augmented(sources: list[str], copies: int, teacher: Path, folder: Path, cfg: FitConfig, classes: list[str],
               log: Log) -> tuple[list[str], np.ndarray]:
    """Up to `copies` perturbed copies of each of `sources` (data/augment.py) and the teacher's
    probabilities for them (a second cached pass, `folder/teacher/augment`), copies below
    `distill.threshold` left out; with 0 copies: none."""
    d = cfg.distill
    texts, _ = augment(sources, copies, cfg.seed)
    if not texts:
        return [], np.zeros((0, len(classes)), np.float32)
    probs = teacher_probabilities(teacher, texts, folder / "teacher" / "augment", classes, chunk_size=d.chunk_size,
                                  bs=d.teacher_bs, log=log)
    keep = select_unlabeled(probs, d.threshold, None, 0, cfg.seed)
    return [texts[i] for i in keep], np.asarray(probs)[keep]


def _student(run: Run, direction: str, cache: dict, *, root: Path, r: int, soft: np.ndarray,
             keep: np.ndarray, aug: list[str]) -> dict:
    """One direction's student of round r (`fit_directions`' `train_one`, maybe in a child process):
    its LM fine-tuned in the run's folder of that direction (`root`, or `root/bwd`; round 1 trains it,
    later rounds and --resume reload it from its checkpoint), its classifier trained on the gold rows
    + the kept unlabelled rows with the teacher's probabilities `soft` into this round's folder of
    that direction, the perturbed copies `aug` (tokenized here) after the unlabelled rows; its
    validation and unlabelled probabilities saved for the round's agreement."""
    cfg, data, log = run.configs[direction], run.data, run.log
    first = next(iter(run.configs))
    folder, lm_folder = (model_dir.direction_folder(f, first, direction) for f in (run.out, root))
    pretrained = pretrained_lm(run, direction)
    tokens = tokens_for(pretrained, data, cache, log)
    resume_lm = run.resume or r > 1  # a later round: the LM of round 1, restored from its finished phase
    vocab = Vocab.load(lm_folder / "vocab.json") if resume_lm and (lm_folder / "vocab.json").exists() else None
    lm = finetune_lm(tokens.lm, lm_folder, cfg.lm, tokenizer=tokens.tokenizer, vocab=vocab, pretrained=pretrained,
                     seed=cfg.seed, optimizer=cfg.optimizer, precision=cfg.precision, resume=resume_lm,
                     direction=direction, log=log)
    folder.mkdir(parents=True, exist_ok=True)
    if folder != lm_folder:  # an intermediate round's folder: a complete model folder of its own
        model_dir.save_text_pipeline(folder, lm.tokenizer.config, lm.vocab)
        model_dir.save_lm(folder, lm.lm, lm.config)
    n_gold = len(data.train.texts)
    unl_tokens = tokens.lm[n_gold:]
    d = cfg.distill
    aug_tokens = tokens.tokenizer.tokenize_many(aug) if aug else []
    targets = SoftTargets(soft, [unl_tokens[i] for i in keep] + aug_tokens, d.temperature, d.alpha)
    clf = replace(cfg.clf, metric=d.metric)  # the student is selected on gold labels by distill.metric
    model, metrics = train_classifier(lm, data.train, data.valid, data.classes, folder, clf, seed=cfg.seed,
                                      optimizer=cfg.optimizer, precision=cfg.precision, resume=run.resume,
                                      train_tokens=tokens.lm[:n_gold], valid_tokens=tokens.valid, direction=direction,
                                      soft=targets, imbalance=cfg.imbalance, log=log)
    member = Member(direction, lm.tokenizer, lm.vocab, model)
    atomic_write_npy(_probs_file(run.out, direction), member.predict_proba(tokens.valid + unl_tokens, len(data.classes)))
    return {"metrics": metrics}


def _probs_file(out: Path, direction: str) -> Path:
    """A finished student's probabilities for the validation texts then the unlabelled ones (resume state)."""
    return out / "checkpoints" / f"{direction}-student-probs.npy"


def _agreement(student: np.ndarray, p_valid: np.ndarray, p_unl: np.ndarray) -> dict:
    """Teacher-student agreement on validation and on the unlabelled texts (None: there are none);
    `student` holds the validation rows then the unlabelled ones."""
    n = len(p_valid)
    return {"valid": _agree(student[:n], p_valid), "unlabeled": _agree(student[n:], p_unl) if len(p_unl) else None}


def _carry_cache(work: Path) -> None:
    """An --overwrite builds the new model in a staging folder beside the old one (fileio.staging_path):
    start it with the old folder's teacher cache, which the cache's own checks reuse only if still valid."""
    final = work.parent / work.name[1:-len(".staging")] if work.name.startswith(".") and work.name.endswith(".staging") else None
    if final is None or staging_path(final) != work or (work / "teacher").exists() or not (final / "teacher").is_dir():
        return
    with mapped(work / "teacher", "copy the teacher cache to"):
        shutil.copytree(final / "teacher", work / "teacher")


def _teacher_labels(teacher, p_valid: np.ndarray, classes: list[str]) -> np.ndarray:
    """The teacher's own labels of its (handed-out) probabilities, columns in `classes` order: its
    calibration.json's decision bias (with BCTS also its class shift undone; none: the argmax)."""
    folder = Path(teacher)
    t_classes = [str(c) for c in model_dir.read_marker(folder)["classes"]]
    calibration = _read_calibration(folder / "calibration.json", len(t_classes))
    return decide(np.asarray(p_valid), bias_in(calibration, t_classes, classes))


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    """Share of texts on which two models predict the same class."""
    return float(np.mean(np.asarray(a).argmax(1) == np.asarray(b).argmax(1))) if len(a) else float("nan")


def report_section(metrics: dict) -> str:
    """The "Distillation" section of report.md (the registered recipe's `report`): per round, the
    teacher's and the student's validation metrics against gold labels and their agreement; for a
    fwd+bwd student one row per student and one for their average (the model)."""
    rounds = metrics.get("distill") or []
    if not rounds:
        return ""
    last = rounds[-1]
    rows = []
    # The model (the last round's averaged or only student) is also shown with its own decision rule
    # (recipes/posthoc.py: `metrics` are the model's as `predict` decides); students are trained and
    # recorded on their argmax, teachers decide with theirs.
    ruled = metrics.get("macro_f1") is not None and metrics.get("macro_f1") != last["student"].get("macro_f1")
    for info in rounds:
        t = info["teacher_metrics"]
        who = info["teacher"] if info["round"] == 1 else f"round {info['round'] - 1}'s student"
        students = [(d, x["student"], x["agreement"]) for d, x in (info.get("by_direction") or {}).items()]
        alone = " ".join(info.get("directions", ["fwd"]))  # records from before directions: fwd
        students.append(("fwd+bwd averaged" if students else alone, info["student"], info["agreement"]))
        for name, s, a in students:
            unl = "-" if a["unlabeled"] is None else f"{a['unlabeled']:.3f}"
            extra = f" + {info['n_augmented']:,} copies" if info.get("n_augmented") else ""
            f1 = f"{s['macro_f1']:.4f}"
            if ruled and info is last and s is info["student"]:
                f1 += f" ({metrics['macro_f1']:.4f} with its rule)"
            rows.append(f"| {info['round']} | {who} | {t['accuracy']:.4f} | {t['macro_f1']:.4f} | {name} | "
                        f"{s['accuracy']:.4f} | {f1} | {a['valid']:.3f} | {unl} | "
                        f"{info['n_gold']:,} + {info['n_unlabeled_used']:,} of {info['n_unlabeled']:,}{extra} |")
    ratio = "all" if last["unlabeled_ratio"] is None else f"{last['unlabeled_ratio']} x the gold rows"
    copies = (f" Perturbed copies of the gold and kept unlabelled texts (Tang et al. 2019; {last['augment_reason']}): "
              f"{last['n_augmented']:,}, trained on as unlabelled rows." if last.get("n_augmented") else "")
    return ("\n## Distillation\n\n"
            f"Temperature {last['temperature']}, alpha {last['alpha']} (weight of the soft term), confidence "
            f"threshold {last['threshold']}, unlabelled rows: {ratio}.{copies} Validation metrics against the gold labels; "
            "agreement = share of texts on which teacher and student predict the same class. A fwd+bwd student "
            "is two students (one per direction, the same soft targets) whose probabilities are averaged: the "
            "averaged row is the model. The teacher's figures are its decisions (its decision rule, if it has one); "
            "the students' are their argmax, and the model's with its own rule too (fitted after training, as "
            "`predict` decides: the sections above).\n\n"
            "| round | teacher | teacher accuracy | teacher macro-F1 | student | student accuracy (argmax) | student macro-F1 (argmax) | "
            "agreement (validation) | agreement (unlabelled) | gold + unlabelled rows |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
