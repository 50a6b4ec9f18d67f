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
3. The student is started the ULMFiT way: the language model fine-tuned on the gold and unlabelled
   text (`finetune_lm`), then the classifier trained by `train_classifier` with the teacher's soft
   targets (train/distill.py `DistillTask`: gold rows cross-entropy + soft term, unlabelled rows the
   soft term only), gradual unfreezing, selection by `distill.metric` (macro-F1) against the GOLD
   validation labels.
4. `rounds > 1` (self-training): round k's student is round k+1's teacher. The language model is
   fine-tuned once and shared by every round. `threshold` keeps only unlabelled rows the teacher is
   confident about.

The result is an ordinary forward classifier folder (predict, evaluate, load unchanged) whose
report adds teacher-vs-student agreement and both models' validation metrics.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json, mapped, staging_path
from ulmfit.recipes import model_dir
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.fit import write_reports
from ulmfit.recipes.prepare import FitData
from ulmfit.recipes.registry import Run
from ulmfit.recipes.teacher import teacher_probabilities
from ulmfit.recipes.toolbox import Log, quiet, tokens_for
from ulmfit.recipes.ulmfit import finetune_lm, train_classifier
from ulmfit.text.vocab import Vocab
from ulmfit.train.distill import SoftTargets
from ulmfit.train.metrics import classification_metrics


def distill(teacher=None, train=None, valid=None, *, out: str | Path, text_col: str = "text", label_col: str = "label",
            unlabeled: list[str] | tuple = (), pretrained: str | None = "auto", config: FitConfig | None = None,
            resume: bool = False, overwrite: bool = False, log: Log = quiet):
    """Train an AWD-LSTM student on `teacher`'s soft targets plus the gold labels; returns the loaded
    student (see `ulmfit.load`). `ulmfit.fit` with recipe "distill" and `distill.teacher` set: the
    same data preparation, config checks, reports, marker and resume. `teacher`: a classifier folder
    (with `resume`: the interrupted run's, from its config.json)."""
    from ulmfit.recipes.fit import fit

    if resume:
        work = model_dir.resume_folder(out)  # the staging folder of an interrupted --overwrite, else out
        saved = FitConfig.load(work / "config.json") if (work / "config.json").exists() else None
        train = train if train is not None else (saved.data.train if saved else None)
        valid = valid if valid is not None else (saved.data.valid if saved else None)
        return fit(train, valid, out=out, unlabeled=unlabeled, resume=True, log=log)
    cfg = FitConfig.from_dict(config.to_dict()) if config is not None else FitConfig()
    if config is None:
        cfg.data = replace(cfg.data, text_col=text_col, label_col=label_col)
        cfg.pretrained = pretrained if pretrained is not None else cfg.pretrained
    cfg.recipe = "distill"
    teacher = teacher if teacher is not None else cfg.distill.teacher
    cfg.distill = replace(cfg.distill, teacher=str(Path(teacher).resolve()) if teacher else None)
    return fit(train, valid, out=out, unlabeled=unlabeled, config=cfg, overwrite=overwrite, log=log)


def fit_recipe(run: Run) -> dict:
    """The registered recipe: the student's LM once, then `distill.rounds` students (round k's
    teaches round k+1); returns the last student's validation metrics with `distill` (every round)."""
    (direction, cfg), data, out, log = next(iter(run.configs.items())), run.data, run.out, run.log
    teacher = Path(cfg.distill.teacher)
    meta = model_dir.read_marker(teacher)  # the one folder validator: a broken marker is one line
    if sorted(meta["classes"]) != data.classes:
        raise UlmfitError(f"--teacher {teacher}: the teacher predicts classes {meta['classes']} but the training "
                          f"data has {data.classes}; distill from a teacher trained on the same labels")
    pretrained_dir = model_dir.resolve_pretrained(cfg.pretrained_for(direction), direction)
    tokens = tokens_for(pretrained_dir, data, {}, log)
    vocab = Vocab.load(out / "vocab.json") if run.resume and (out / "vocab.json").exists() else None
    lm = finetune_lm(tokens.lm, out, cfg.lm, tokenizer=tokens.tokenizer, vocab=vocab, pretrained=pretrained_dir,
                     seed=cfg.seed, optimizer=cfg.optimizer, precision=cfg.precision, resume=run.resume,
                     direction=direction, log=log)
    rounds, teacher_r = [], teacher
    for r in range(1, cfg.distill.rounds + 1):
        final = r == cfg.distill.rounds
        folder = out if final else out / "checkpoints" / f"round-{r}"
        done = out / "checkpoints" / f"round-{r}-done.json"
        if run.resume and done.exists():
            log(f"distillation round {r}: already trained, not trained again")
            info = json.loads(done.read_text())
        else:
            info = _round(r, folder, teacher_r, lm, tokens, data, cfg, run.resume, log, final=final, direction=direction)
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


def _round(r: int, folder: Path, teacher: Path, lm, tokens, data: FitData, cfg: FitConfig, resume: bool,
           log: Log, final: bool, direction: str = "fwd") -> dict:
    """One student from `teacher` into `folder`; returns its record (metrics, agreement, sizes).
    `final`: `folder` is the run's own folder (its report and marker are written by `distill`); else an
    intermediate round's folder, completed here as a model folder (the next round's teacher)."""
    from ulmfit.recipes.predictor import Member

    t0 = time.perf_counter()
    d = cfg.distill
    classes = data.classes
    n_gold, n_unl = len(data.train.texts), len(data.unlabeled)
    folder.mkdir(parents=True, exist_ok=True)
    if not final:  # the run's folder has them from finetune_lm
        model_dir.save_text_pipeline(folder, lm.tokenizer.config, lm.vocab)
        model_dir.save_lm(folder, lm.lm, lm.config)
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
    unl_tokens = tokens.lm[n_gold:]
    soft = SoftTargets(np.concatenate([np.asarray(p_gold), np.asarray(p_unl)[keep]]).astype(np.float32),
                       [unl_tokens[i] for i in keep], d.temperature, d.alpha)
    clf = replace(cfg.clf, metric=d.metric)  # the student is selected on gold labels by distill.metric
    model, metrics = train_classifier(lm, data.train, data.valid, classes, folder, clf, seed=cfg.seed,
                                      optimizer=cfg.optimizer, precision=cfg.precision, resume=resume,
                                      train_tokens=tokens.lm[:n_gold], valid_tokens=tokens.valid, direction=direction,
                                      soft=soft, imbalance=cfg.imbalance, log=log)
    student = Member(direction, lm.tokenizer, lm.vocab, model)
    s_valid = student.predict_proba(tokens.valid, len(classes))
    s_unl = student.predict_proba(unl_tokens, len(classes)) if n_unl else np.zeros((0, len(classes)))
    teacher_metrics = classification_metrics(data.valid.labels, np.asarray(p_valid).argmax(1), classes)
    info = {
        "round": r, "teacher": str(teacher), "student": metrics, "teacher_metrics": teacher_metrics,
        "agreement": {"valid": _agree(s_valid, p_valid), "unlabeled": _agree(s_unl, p_unl) if n_unl else None},
        "n_gold": n_gold, "n_unlabeled": n_unl, "n_unlabeled_used": int(len(keep)),
        "temperature": d.temperature, "alpha": d.alpha, "threshold": d.threshold,
        "unlabeled_ratio": d.unlabeled_ratio, "seconds": round(time.perf_counter() - t0, 1),
    }
    log(f"round {r}: validation macro-F1 student {metrics['macro_f1']:.4f}, teacher {teacher_metrics['macro_f1']:.4f}; "
        f"agreement {info['agreement']['valid']:.3f} on validation"
        + (f", {info['agreement']['unlabeled']:.3f} on the unlabelled texts" if n_unl else ""))
    if not final:
        write_reports(folder, {**metrics, "distill": [info]}, classes, cfg, info["seconds"])
        model_dir.write_marker(folder, "classifier", classes=classes, recipe="distill", metric=cfg.distill.metric,
                               direction=direction, directions=[direction])
        model_dir.remove_checkpoints(folder)
    return info


def _carry_cache(work: Path) -> None:
    """An --overwrite builds the new model in a staging folder beside the old one (fileio.staging_path):
    start it with the old folder's teacher cache, which the cache's own checks reuse only if still valid."""
    final = work.parent / work.name[1:-len(".staging")] if work.name.startswith(".") and work.name.endswith(".staging") else None
    if final is None or staging_path(final) != work or (work / "teacher").exists() or not (final / "teacher").is_dir():
        return
    with mapped(work / "teacher", "copy the teacher cache to"):
        shutil.copytree(final / "teacher", work / "teacher")


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    """Share of texts on which two models predict the same class."""
    return float(np.mean(np.asarray(a).argmax(1) == np.asarray(b).argmax(1))) if len(a) else float("nan")


def report_section(metrics: dict) -> str:
    """The "Distillation" section of report.md (the registered recipe's `report`): per round, the
    teacher's and the student's validation metrics against gold labels and their agreement."""
    rounds = metrics.get("distill") or []
    if not rounds:
        return ""
    last = rounds[-1]
    rows = []
    for info in rounds:
        t, s, a = info["teacher_metrics"], info["student"], info["agreement"]
        unl = "-" if a["unlabeled"] is None else f"{a['unlabeled']:.3f}"
        who = info["teacher"] if info["round"] == 1 else f"round {info['round'] - 1}'s student"
        rows.append(f"| {info['round']} | {who} | {t['accuracy']:.4f} | {t['macro_f1']:.4f} | "
                    f"{s['accuracy']:.4f} | {s['macro_f1']:.4f} | {a['valid']:.3f} | {unl} | "
                    f"{info['n_gold']:,} + {info['n_unlabeled_used']:,} of {info['n_unlabeled']:,} |")
    ratio = "all" if last["unlabeled_ratio"] is None else f"{last['unlabeled_ratio']} x the gold rows"
    return ("\n## Distillation\n\n"
            f"Temperature {last['temperature']}, alpha {last['alpha']} (weight of the soft term), confidence "
            f"threshold {last['threshold']}, unlabelled rows: {ratio}. Validation metrics against the gold labels; "
            "agreement = share of texts on which teacher and student predict the same class.\n\n"
            "| round | teacher | teacher accuracy | teacher macro-F1 | student accuracy | student macro-F1 | "
            "agreement (validation) | agreement (unlabelled) | gold + unlabelled rows |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
