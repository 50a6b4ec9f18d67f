"""Accuracy against the tools a user would otherwise use: test macro-F1 and accuracy per data set,
label budget, method and seed, all on the same splits, machine and run.

    nice -n 10 .venv/bin/python benchmarks/accuracy.py --quick --datasets tweets --methods ulmfit-fwd,tfidf --budgets 100,500 --seeds 1
    nice -n 10 .venv/bin/python benchmarks/accuracy.py --pretrained runs/general-en          # the full sweep (hours)
    nice -n 10 .venv/bin/python benchmarks/accuracy.py --csv tr.csv,va.csv,te.csv --csv-name mine --methods tfidf

Data sets: tweets (`ulmfit.data.fetch.fetch_tweets`), spam (`fetch_spam`), tweets-40-55-5 (the
tweets resampled deterministically to 40/55/5 negative/neutral/positive in every split, the founding
user's imbalance: `resample_shares`), and any `--csv
train,valid,test` (CSV with text,label). Budgets: the number of labelled training examples (a
stratified, seeded sample of the training split: proportional to class frequencies, at least one per
class; the same sample for every method at a given seed), or `full`. Every method gets the full
validation split (model selection, C, early stopping) and is scored on the full test split.

Methods (peers run in their own venvs, benchmarks/setup_peers.sh; JSON files in and out):
  ulmfit-fwd       `ulmfit fit --backbone awd_lstm --direction fwd` (our CLI; the AWD-LSTM forward LM), then
                   `ulmfit evaluate --json`
  ulmfit-both      the same with `--direction both` (forward + backward ensemble)
  ulmfit-bwd       the same with `--direction bwd` alone (from the shipped backward LM, general-en-bwd)
  siatl            the same with `--recipe siatl`
  ulmfit-minilm    `ulmfit fit --backbone minilm --student off`: the ULMFiT recipe on all-MiniLM-L6-v2
                   (masked-word fine-tuning on the text at hand, then the classifier with gradual unfreezing),
                   the model alone (without --student off a few-label run adds its student and the ensemble)
  ulmfit-minilm-2  the same trained with seed 100+SEED on the same label sample: a second member for a deep
                   ensemble (`--methods ulmfit-minilm,ulmfit-minilm-2,distill,ensemble --ensemble-of
                   ulmfit-minilm,ulmfit-minilm-2,distill --ensemble-weights equal`)
  ulmfit-both-2    ulmfit-both trained with seed 100+SEED on the same label sample (a deep ensemble's second AWD-LSTM pair)
  ulmfit-default   `ulmfit fit` with no model choice at all (no --backbone, --pretrained, --direction): what
                   a new user gets; the data chooses the model (recipes/auto_backbone.py), the cell records
                   which ("recipe", "auto_choice", "student": with few labels and unlabelled text the
                   MiniLM model, its distilled student and their ensemble, recipes/few_labels.py). Every
                   other ulmfit method pins its model (--backbone awd_lstm)
  ulmfit-fwd-before, siatl-before   the same with issue 21's defaults switched off (no class weighting,
                   no tuned decision rule, no temperature): the defaults before that change
  ulmfit-fwd-novalid   ulmfit-fwd without the validation file: the budget's labels are all the labels
                   (a few-label user's case); the default holds out 10% of them, or cross-validates
                   when that split is too small (clf.cv=auto); the peers still choose C on the split
  ulmfit-fwd-novalid-cvoff   the same with clf.cv=off: selection on the 10% hold-out
  tfidf            TF-IDF 1-2 grams + logistic regression, C on valid (ulmfit.recipes.baselines)
  tfidf-balanced   the same with class_weight="balanced" (inverse-frequency weights)
  tfidf-model      `ulmfit fit --recipe tfidf`: the same fit as a model folder (calibrated, with the post-hoc
                   decision rule like every recipe of ours), an ensemble member (`--ensemble-of ulmfit-both,tfidf-model`)
  minilm-frozen    all-MiniLM-L6-v2 sentence embeddings + logistic regression, C on valid
  minilm-frozen-balanced   the same with class_weight="balanced"
  minilm-finetune  all-MiniLM-L6-v2 fine-tuned end to end (bounded epochs/steps: see peers/minilm.py)
  setfit           SetFit 1.2.0 with the all-MiniLM-L6-v2 body (contrastive pairs, then logistic
                   regression; bounded steps: see peers/setfit_peer.py); venv: setup_peers.sh setfit
  fastai           fastai 2.8.12 ULMFiT (book chapter 10), our model size; starts from our
                   pretrained LM (exported with ulmfit.recipes.fastai_export) when --pretrained is a folder
  distill          `ulmfit distill --direction both`: the kept ulmfit-minilm model of the same data set,
                   budget and seed as teacher, a fwd+bwd AWD-LSTM student over the rest of the training
                   split; its LMs fine-tuned once per data set on the whole training split
                   (work/<dataset>/student-lm-fwd|bwd); needs ulmfit-minilm run first with --keep-models
  ensemble         `ulmfit ensemble` of the kept model folders of the `--ensemble-of` cells (default
                   ulmfit-minilm, distill: the best MiniLM and AWD-LSTM models) of the same data set, budget and seed, weights
                   chosen on the validation split, then `ulmfit evaluate --json`; needs those cells run
                   first with --keep-models (list ensemble after them in --methods). train_s is the sum
                   of the members' train_s plus the weight search. --ensemble-weights equal (or W1,W2,...)
                   passes `ulmfit ensemble --weights`: fixed weights instead of the validated choice
Only the ULMFiT methods (ours and fastai's) see the rest of the training split (unlabelled) as
language-model text; that is ULMFiT's point. By default the harness passes our sample as --train
and the rest as --unlabeled, so ULMFiT trains on exactly the labels the peers get;
`--ulmfit-labels cli` passes the whole training split with `--max-labels N` instead and lets ulmfit
draw its own sample.

Each cell is one JSON file in benchmarks/results/accuracy/ (accuracy-quick/ with --quick): a rerun
skips finished cells, so an interrupted sweep resumes. The summary (median over seeds) is printed
and written to benchmarks/results/accuracy.json, with a plot per data set, accuracy_<dataset>.png.
The summary covers every cell in the folder, not only this run's selection, so a run that adds
seeds 1-2 of one cell never drops the rest from the table.
A cell whose CLI flag does not exist yet is recorded as "unavailable" (retried on the next run).
`--summary-only` runs nothing and rebuilds the summary and plots; `--with-transfer
benchmarks/results/transfer.json` (repeatable: transfer_spam.json for spam) adds benchmarks/transfer.py's
results for our recipes at the budgets this sweep has no cell for (the two harnesses draw the same
samples).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ulmfit.data.subset import stratified_subset
from ulmfit.fileio import atomic_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OUR_CLI, PEER_PY, RESULTS, machine_info, macro_f1_accuracy, package_versions,  # noqa: E402
                    per_class_f1, read_json, run_measured, table, tail, write_json)

METHODS = ["ulmfit-fwd", "ulmfit-fwd-before", "ulmfit-fwd-novalid", "ulmfit-fwd-novalid-cvoff", "ulmfit-both", "ulmfit-both-2", "ulmfit-bwd", "siatl", "siatl-before", "ulmfit-minilm",
           "ulmfit-minilm-2", "ulmfit-default",
           "tfidf", "tfidf-balanced", "tfidf-model", "minilm-frozen", "minilm-frozen-balanced", "minilm-finetune", "setfit", "fastai",
           "distill", "ensemble"]  # distill and ensemble last: they read the kept folders of cells run before them
ULMFIT_METHODS = {"ulmfit-fwd", "ulmfit-fwd-before", "ulmfit-fwd-novalid", "ulmfit-fwd-novalid-cvoff", "ulmfit-both", "ulmfit-both-2", "ulmfit-bwd", "siatl", "siatl-before", "ulmfit-minilm",
                  "ulmfit-minilm-2", "ulmfit-default"}
# The best MiniLM model and the best AWD-LSTM one (issue 16): the MiniLM model's own distilled fwd+bwd
# student (issue 17), within a point of its teacher up to 500 labels where undistilled ULMFiT fwd+bwd is
# 4-5 points below it (docs/BENCHMARKS.md, "the MiniLM model and its distilled AWD-LSTM student").
ENSEMBLE_OF = "ulmfit-minilm,distill"
TEACHER = "ulmfit-minilm"  # the cell whose kept model folder the distill method distils
MINILM_METHODS = ("ulmfit-minilm", "ulmfit-minilm-2")  # ULMFiT on MiniLM; the second trains with seed SECOND_SEED + SEED
SECOND_SEED = 100  # on the harness's label sample of SEED: another training seed, never another sample
# "-before": the recipe with issue 21's defaults switched off (no class weighting, no tuned decision
# rule, no temperature scaling), i.e. the defaults before that change; same training otherwise.
BEFORE_ISSUE_21 = ["clf.class_weights=none", "siatl.class_weights=none", "imbalance.decision_rule=none",
                   "imbalance.temperature=false"]
PEERS = Path(__file__).resolve().parent / "peers"

# --quick: tiny data and models, to check the whole pipeline in a few minutes (numbers meaningless).
QUICK_ROWS = {"train": 2000, "valid": 300, "test": 500}
QUICK_OURS = ["--set", "lm.preset=tiny", "--set", "lm.epochs=1", "--set", "lm.max_train_tokens=30000",
              "--set", "clf.epochs=[1,1,1,1]", "--set", "lm.max_vocab=5000"]
QUICK_FASTAI = dict(emb_sz=16, n_hid=32, n_layers=2, lm_epochs=1, lm_frozen_epochs=1, clf_epochs=[1, 1, 1, 1],
                    max_vocab=5000)
QUICK_MINILM_FT = dict(epochs=1, max_steps=20)
QUICK_TRANSFORMER = ["--set", "transformer.mlm_max_docs=500", "--set", "transformer.epochs=[1,1,1,1]",
                     "--set", "transformer.min_steps_per_epoch=5", "--set", "transformer.min_last_stage_steps=0"]


# ------------------------------------------------------------------------------------ data

def load_datasets(names: list[str], csvs: list[str], csv_names: list[str]) -> dict[str, dict[str, Path]]:
    out = {}
    for name in names:
        if name == "tweets":
            from ulmfit.data.fetch import fetch_tweets
            out[name] = fetch_tweets()
        elif name == "spam":
            from ulmfit.data.fetch_spam import fetch_spam
            out[name] = fetch_spam()
        elif name == IMBALANCED:
            from ulmfit.data.fetch import fetch_tweets
            from ulmfit.data.fetch_lib import cache_dir
            out[name] = resample_shares(fetch_tweets(), IMBALANCED_SHARES, cache_dir() / IMBALANCED / "v1")
        else:
            sys.exit(f"unknown data set {name!r}: tweets, spam, {IMBALANCED}, or give --csv train,valid,test")
    for i, spec in enumerate(csvs):
        parts = spec.split(",")
        if len(parts) != 3:
            sys.exit(f"--csv {spec!r}: expected train.csv,valid.csv,test.csv")
        name = csv_names[i] if i < len(csv_names) else Path(parts[0]).resolve().parent.name
        out[name] = dict(zip(("train", "valid", "test"), map(Path, parts)))
    return out


# The founding user's case (issue 21): three classes split 40/55/5. The tweets resampled to those
# shares in train, valid and test alike (resample_shares): every neutral tweet is kept, negatives and
# positives are drawn without replacement, with a fixed seed, so the files are the same on every machine.
IMBALANCED = "tweets-40-55-5"
IMBALANCED_SHARES = {"negative": 0.40, "neutral": 0.55, "positive": 0.05}
IMBALANCED_SEED = 4055


def resample_shares(paths: dict[str, Path], shares: dict[str, float], out: Path,
                    seed: int = IMBALANCED_SEED) -> dict[str, Path]:
    """Each split of `paths` resampled (without replacement, rows kept in their order) so that the
    classes have `shares`; the largest split size the rarest-relative-to-its-share class allows."""
    dest = {k: out / f"{k}.csv" for k in paths}
    if all(p.exists() for p in dest.values()) and (out / "stats.json").exists():
        return dest
    rng = np.random.default_rng(seed)
    stats = {"shares": shares, "seed": seed, "source": {k: str(v) for k, v in paths.items()}, "counts": {}}
    out.mkdir(parents=True, exist_ok=True)
    for split, path in paths.items():
        df = read_split(path)
        counts = df["label"].value_counts()
        missing = set(shares) - set(counts.index)
        if missing:
            sys.exit(f"{path}: no rows of class(es) {sorted(missing)}; cannot resample to {shares}")
        total = int(min(counts[c] / s for c, s in shares.items()))
        keep = []
        for c, s in shares.items():
            idx = np.flatnonzero(df["label"].to_numpy() == c)
            keep.append(rng.choice(idx, size=min(len(idx), int(round(s * total))), replace=False))
        sub = df.iloc[np.sort(np.concatenate(keep))]
        with atomic_file(dest[split], "w") as f:  # a unique temp name: two harness runs may prepare it at once
            sub.to_csv(f, index=False)
        stats["counts"][split] = sub["label"].value_counts().sort_index().to_dict()
    write_json(out / "stats.json", stats)
    return dest


def read_split(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"text", "label"} - set(df.columns)
    if missing:
        sys.exit(f"{path}: missing column(s) {sorted(missing)}; the harness reads CSV files with text,label")
    return df[["text", "label"]]


def stratified_sample(labels, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded stratified sample of size n (proportional to class shares by largest
    remainder, at least one per class): the very sample `ulmfit fit --max-labels n --seed seed` draws,
    so benchmarks/transfer.py's cells and these are scored on the same labels."""
    if n >= len(labels):
        return np.arange(len(labels))
    return stratified_subset(np.asarray(labels), total=n, seed=seed)[0]


def prepare(ds: str, paths: dict[str, Path], quick: bool, work: Path) -> dict[str, Path]:
    """The splits the cells read (capped in --quick mode), as UTF-8 CSV files text,label."""
    if not quick:
        return {k: Path(v) for k, v in paths.items()}
    out = {}
    for split, path in paths.items():
        dest = work / ds / "quick" / f"{split}.csv"
        if not dest.exists():
            df = read_split(path)
            idx = stratified_sample(df["label"].to_numpy(), QUICK_ROWS[split], seed=12345)
            dest.parent.mkdir(parents=True, exist_ok=True)
            df.iloc[idx].to_csv(dest, index=False)
        out[split] = dest
    return out


def split_sample(df: pd.DataFrame, budget: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the budget's labelled sample, the rest) of a training split. The harness passes the rest's text as
    unlabelled; with its labels it is a held-out set no model trained on (benchmarks/ensemble_rules.py's "rest")."""
    mask = np.zeros(len(df), bool)
    mask[stratified_sample(df["label"].to_numpy(), budget, seed)] = True
    return df[mask], df[~mask]


def budget_files(ds: str, splits: dict[str, Path], budget, seed: int, work: Path, quick: bool) -> tuple[Path, Path | None, int]:
    """(labelled train CSV, unlabelled rest CSV or None, number of labels) for one budget and seed."""
    if budget == "full":
        return splits["train"], None, len(read_split(splits["train"]))
    d = work / ds / ("quick" if quick else "samples") / f"n{budget}-s{seed}"
    lab, rest = d / "train.csv", d / "unlabeled.csv"
    if not (lab.exists() and rest.exists()):
        labelled, unlabelled = split_sample(read_split(splits["train"]), int(budget), seed)
        d.mkdir(parents=True, exist_ok=True)
        labelled.to_csv(lab, index=False)
        unlabelled[["text"]].to_csv(rest, index=False)
    return lab, rest, int(budget)


# ------------------------------------------------------------------------------------ methods

def cli_caps() -> dict[str, bool]:
    """Which of the flags the harness needs `ulmfit fit` has (they are being added in parallel)."""
    try:
        h = subprocess.run([str(OUR_CLI), "fit", "--help"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        h = ""
    recipe = re.search(r"--recipe \{([^}]*)\}", h)
    direction = re.search(r"--direction \{([^}]*)\}", h)
    return {"max_labels": "--max-labels" in h, "direction_both": bool(direction and "both" in direction.group(1)),
            "direction": "--direction" in h, "siatl": bool(recipe and "siatl" in recipe.group(1)),
            "backbone": "--backbone" in h, "student": "--student" in h}


def run_ulmfit(method, cell, a, caps, splits, lab, rest, budget, seed, cdir, log) -> dict:
    need = {"ulmfit-both": "direction_both", "ulmfit-both-2": "direction_both", "ulmfit-bwd": "direction", "siatl": "siatl", "siatl-before": "siatl",
            **dict.fromkeys(MINILM_METHODS, "backbone")}.get(method)
    if need and not caps[need]:
        flag = {"direction_both": "--direction both", "direction": "--direction", "siatl": "--recipe siatl",
                "backbone": "--backbone"}[need]
        return {"status": "unavailable", "reason": f"`ulmfit fit` has no {flag} yet"}
    out = cdir / "model"
    train_seed = SECOND_SEED + seed if method.endswith("-2") else seed  # ulmfit-minilm-2, ulmfit-both-2
    cmd = [str(OUR_CLI), "fit", "--out", str(out), "--seed", str(train_seed), "--overwrite"]
    if "-novalid" not in method:
        cmd += ["--valid", str(splits["valid"])]
    if budget != "full" and a.ulmfit_labels == "cli":
        if not caps["max_labels"]:
            return {"status": "unavailable", "reason": "`ulmfit fit` has no --max-labels yet (or use --ulmfit-labels harness)"}
        cmd += ["--train", str(splits["train"]), "--max-labels", str(budget)]
    else:
        cmd += ["--train", str(lab)] + (["--unlabeled", str(rest)] if rest is not None else [])
    if method in ("ulmfit-both", "ulmfit-both-2"):
        cmd += ["--direction", "both"]
    elif method in ("ulmfit-fwd", "ulmfit-fwd-before", "ulmfit-fwd-novalid", "ulmfit-fwd-novalid-cvoff") and caps["direction"]:
        cmd += ["--direction", "fwd"]
    elif method == "ulmfit-bwd":
        cmd += ["--direction", "bwd"]
    if method in ("siatl", "siatl-before"):
        cmd += ["--recipe", "siatl"]
    if method.endswith("-cvoff"):
        cmd += ["--set", "clf.cv=off"]
    if method.endswith("-before"):
        cmd += [x for s in BEFORE_ISSUE_21 for x in ("--set", s)]
    if method in MINILM_METHODS:  # its own pretrained encoder: --pretrained (an AWD-LSTM LM) does not apply
        cmd += ["--backbone", "minilm"] + (QUICK_TRANSFORMER if a.quick else [])
        cmd += ["--student", "off"] if caps["student"] else []  # the MiniLM model alone (distill, ensemble: below)
    elif method == "ulmfit-default":  # no model choice at all (--pretrained would be one): the data chooses
        cmd += (QUICK_OURS + QUICK_TRANSFORMER) if a.quick else []
    else:
        if caps["backbone"]:
            cmd += ["--backbone", "awd_lstm"]  # the AWD-LSTM, pinned: the default model is chosen from the data
        pretrained = "none" if a.quick and a.pretrained is None else a.pretrained
        if method == "ulmfit-bwd" and pretrained != "none":
            pretrained = None  # --pretrained names a forward LM; a backward run takes the CLI's default, general-en-bwd
        if pretrained is not None:
            cmd += ["--pretrained", pretrained]
        if a.quick:
            cmd += QUICK_OURS
    for s in a.ulmfit_set or []:
        cmd += ["--set", s]
    # the recipe fit ran, and why when it chose it (ulmfit-default)
    return train_and_score(a, cmd, out, splits, cdir, "fit.log",
                           lambda out: {k: read_json(out / "config.json").get(k) for k in ("recipe", "auto_choice", "student")})


def run_tfidf_model(a, splits, lab, seed, cdir) -> dict:
    """`ulmfit fit --recipe tfidf` on the budget's labels (it reads no unlabelled text)."""
    out = cdir / "model"
    cmd = [str(OUR_CLI), "fit", "--recipe", "tfidf", "--train", str(lab), "--valid", str(splits["valid"]),
           "--out", str(out), "--seed", str(seed), "--overwrite"]
    return train_and_score(a, cmd, out, splits, cdir, "fit.log",
                           lambda out: {"C": read_json(out / "valid_metrics.json")["tfidf"]["C"]})


def train_and_score(a, cmd: list[str], out: Path, splits: dict, cdir: Path, log_name: str, extra=None) -> dict:
    """One trained cell: `cmd` trains the model folder `out`, `ulmfit evaluate` scores it on the test
    split, the folder goes unless --keep-models. The cell's record (the figures every trained cell
    reports, plus what `extra(out)` reads from the folder before it goes), or its failure record."""
    fit, failed = run_step(a, cmd, cdir / log_name)
    if failed:
        return failed
    ev, metrics, failed = evaluate_folder(a, out, splits, cdir)
    if failed:
        return failed
    more = extra(out) if extra else {}
    if not a.keep_models:
        shutil.rmtree(out, ignore_errors=True)
    return {"status": "ok", **cell_scores(metrics, splits), "train_s": fit["wall_s"], "wall_s": round(fit["wall_s"] + ev["wall_s"], 2),
            "peak_rss_mb": fit["peak_rss_mb"], "predict_s": ev["wall_s"], "predict_peak_rss_mb": ev["peak_rss_mb"],
            **more, "command": cmd,
            "details": {"evaluate": {k: metrics[k] for k in metrics if k in ("per_class", "n", "by_direction")}}}


def cell_scores(metrics: dict, splits: dict) -> dict:
    """The test figures every cell of ours reports, from `ulmfit evaluate --json` of its folder."""
    return {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
            **rare_class_f1({c: m["f1"] for c, m in metrics["per_class"].items()}, splits["test"]),
            "ece_before": metrics.get("ece_before"), "ece": metrics.get("ece_after"),
            "argmax_macro_f1": (metrics.get("argmax") or {}).get("macro_f1")}


def run_step(a, cmd: list[str], log_path: Path) -> tuple[dict, dict | None]:
    """One measured subprocess of a cell: (the measured run, None), or (it, the cell's failure record)."""
    r = run_measured(cmd, log_path=log_path, timeout=a.cell_timeout)
    if r["rc"] != 0:
        return r, {"status": "failed", "command": cmd, "rc": r["rc"], "log_tail": tail(log_path)}
    return r, None


def evaluate_folder(a, out: Path, splits: dict, cdir: Path) -> tuple[dict, dict | None, dict | None]:
    """`ulmfit evaluate OUT` on the test split: (the measured run, its JSON metrics, None), or the cell's
    failure record as the third item."""
    ev_cmd = [str(OUR_CLI), "evaluate", str(out), "--data", str(splits["test"]), "--json"]
    ev, failed = run_step(a, ev_cmd, cdir / "evaluate.log")
    if failed:
        return ev, None, failed
    return ev, json.loads(ev["stdout"].strip().splitlines()[-1]), None


def run_ensemble(a, splits, ds, budget, seed, work_tag: Path, cell_root: Path, cdir: Path) -> dict:
    """`ulmfit ensemble` of the kept model folders of the `--ensemble-of` cells (same data set, budget, seed)."""
    members = a.ensemble_of.split(",")
    folders, member_cells = [], []
    for m in members:
        cell_id = f"{ds}__{m}__{budget}__s{seed}"
        folder, cell = work_tag / cell_id / "model", cell_root / f"{cell_id}.json"
        if not (folder / "ulmfit.json").exists() or not cell.exists():
            return {"status": "unavailable", "reason": f"no kept model folder of cell {cell_id}: run it first with "
                                                       f"--keep-models (list ensemble after it in --methods)"}
        folders.append(folder)
        member_cells.append(read_json(cell))
    out = cdir / "model"
    cmd = [str(OUR_CLI), "ensemble", *map(str, folders), "--valid", str(splits["valid"]), "--out", str(out), "--overwrite",
           *(["--weights", a.ensemble_weights] if a.ensemble_weights else [])]
    ens, failed = run_step(a, cmd, cdir / "ensemble.log")
    if failed:
        return failed
    ev, metrics, failed = evaluate_folder(a, out, splits, cdir)
    if failed:
        return failed
    weights = {m: e["weight"] for m, e in zip(members, read_json(out / "ulmfit.json")["members"])}
    if not a.keep_models:
        shutil.rmtree(out, ignore_errors=True)
    return {"status": "ok", **cell_scores(metrics, splits),
            "train_s": round(sum(c["train_s"] for c in member_cells) + ens["wall_s"], 2), "ensemble_s": ens["wall_s"],
            "wall_s": round(ens["wall_s"] + ev["wall_s"], 2), "peak_rss_mb": ens["peak_rss_mb"], "predict_s": ev["wall_s"],
            "predict_peak_rss_mb": ev["peak_rss_mb"], "command": cmd, "weights": weights,
            "fixed_weights": a.ensemble_weights,  # None: chosen on validation (a variant needs its own --out or --redo)
            "details": {"evaluate": {k: metrics[k] for k in metrics if k in ("per_class", "n", "by_direction")},
                        "members": {m: c["macro_f1"] for m, c in zip(members, member_cells)}}}


def student_lms(a, splits, ds: str, work: Path) -> tuple[list[str], dict | None]:
    """The distill method's starting LMs as `ulmfit distill` arguments: forward and backward, each
    `ulmfit finetune-lm` from the shipped general-en(-bwd) on the whole training split, once per data
    set (work/<ds>/student-lm-<direction>/). Every budget's labelled sample plus its unlabelled rest is
    that same text, so every cell would fine-tune the same two LMs. (args, None) or (None, failure)."""
    args = []
    for d in ("fwd", "bwd"):
        lm = work / ds / f"student-lm{'-quick' if a.quick else ''}-{d}"
        if not (lm / "ulmfit.json").exists():
            cmd = [str(OUR_CLI), "finetune-lm", "--train", str(splits["train"]), "--out", str(lm), "--direction", d,
                   "--overwrite"] + (["--pretrained", "none"] + QUICK_OURS if a.quick else [])
            _, failed = run_step(a, cmd, lm.parent / f"student-lm-{d}.log")
            if failed:
                return None, failed
        args += ["--pretrained" if d == "fwd" else "--pretrained-bwd", str(lm)]
    return args + ["--set", "lm.epochs=0", "--set", "lm.frozen_epochs=0"], None


def run_distill(a, splits, ds, budget, seed, lab, rest, work: Path, work_tag: Path, cdir: Path) -> dict:
    """`ulmfit distill --direction both`: the kept model folder of the TEACHER cell (same data set, budget and
    seed) taught to a fwd+bwd AWD-LSTM student over the rest of the training split (all labels: over its
    own training rows), from `student_lms`' LMs. train_s is the student's own (its teacher's cell is not counted: the ensemble sums both)."""
    teacher = work_tag / f"{ds}__{TEACHER}__{budget}__s{seed}" / "model"
    if not (teacher / "ulmfit.json").exists():
        return {"status": "unavailable", "reason": f"no kept model folder of cell {ds}__{TEACHER}__{budget}__s{seed}: "
                                                   f"run it first with --keep-models (list distill after it in --methods)"}
    lms, failed = student_lms(a, splits, ds, work)
    if failed:
        return failed
    out = cdir / "model"
    cmd = [str(OUR_CLI), "distill", "--teacher", str(teacher), "--train", str(lab),
           *(["--unlabeled", str(rest)] if rest is not None else []), "--valid", str(splits["valid"]), "--out", str(out), "--seed", str(seed), "--direction", "both",
           "--overwrite", *lms] + (QUICK_OURS if a.quick else [])
    return train_and_score(a, cmd, out, splits, cdir, "distill.log", lambda out: {"teacher": str(teacher)})


def fastai_params(a) -> dict:
    p = dict(QUICK_FASTAI) if a.quick else {}
    if a.pretrained and a.fastai_pretrained and Path(a.pretrained).is_dir():
        exp = export_for_fastai(a.pretrained)
        cfg = read_json(exp / "fastai_config.json")
        p.update(emb_sz=cfg["emb_sz"], n_hid=cfg["n_hid"], n_layers=cfg["n_layers"],
                 pretrained_pth=str(exp / cfg["weights"]), pretrained_itos=str(exp / cfg["itos"]))
    return p


def export_for_fastai(lm_folder: str) -> Path:
    """Our pretrained LM in fastai's format (once per folder)."""
    from ulmfit.recipes.fastai_export import export_fastai

    out = RESULTS / "work" / "fastai-export" / Path(lm_folder).name
    if not (out / "fastai_config.json").exists():
        export_fastai(lm_folder, out, overwrite=True)
    return out


def run_peer(method, a, splits, lab, rest, seed, cdir) -> dict:
    venv, script, params = {
        "tfidf": ("ours", "tfidf.py", {}),
        "tfidf-balanced": ("ours", "tfidf.py", {"class_weight": "balanced"}),
        "minilm-frozen": ("hf", "minilm.py", {"mode": "frozen"}),
        "minilm-frozen-balanced": ("hf", "minilm.py", {"mode": "frozen", "class_weight": "balanced"}),
        "minilm-finetune": ("hf", "minilm.py", {"mode": "finetune", **(QUICK_MINILM_FT if a.quick else {})}),
        "setfit": ("setfit", "setfit_peer.py", {"max_steps": 20} if a.quick else {}),
        "fastai": ("fastai", "fastai_text.py", None),
    }[method]
    if params is None:
        params = fastai_params(a)
    py = PEER_PY[venv]
    if not py.exists():
        return {"status": "unavailable", "reason": f"{py} missing: run bash benchmarks/setup_peers.sh"}
    job = {"train": str(lab), "valid": str(splits["valid"]), "test": str(splits["test"]),
           "unlabeled": str(rest) if method == "fastai" and rest is not None else None,
           "seed": seed, "workdir": str(cdir / "work"), "params": params,
           "cache_dir": str(RESULTS / "work" / "embeddings") if a.cache_embeddings else None}
    write_json(cdir / "job.json", job)
    cmd = [str(py), str(PEERS / script), str(cdir / "job.json"), str(cdir / "result.json")]
    r = run_measured(cmd, log_path=cdir / "run.log", timeout=a.cell_timeout)
    if r["rc"] != 0 or not (cdir / "result.json").exists():
        return {"status": "failed", "command": cmd, "rc": r["rc"], "log_tail": tail(cdir / "run.log")}
    res = read_json(cdir / "result.json")
    truth = list(read_split(splits["test"])["label"])
    m = {**macro_f1_accuracy(truth, res["test_pred"]), **rare_class_f1(per_class_f1(truth, res["test_pred"]), splits["test"])}
    if not a.keep_models:
        shutil.rmtree(cdir / "work", ignore_errors=True)
    return {"status": "ok", **m, "train_s": res["train_s"], "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"],
            "predict_s": res.get("predict_s"), "command": cmd, "details": res.get("details", {}),
            "peer_versions": res.get("versions")}


def rare_class_f1(f1_by_class: dict, test: Path) -> dict:
    """The F1 of the test split's rarest class (the 5% class of tweets-40-55-5), and every class's F1."""
    counts = read_split(test)["label"].value_counts()
    rare = str(counts.idxmin())
    return {"rare_class": rare, "rare_f1": f1_by_class.get(rare, 0.0), "per_class_f1": f1_by_class}


# ------------------------------------------------------------------------------------ summary

def summarise(cells: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["method"], str(c["budget"])), []).append(c)
    rows = []
    for (ds, method, budget), cs in sorted(groups.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]) if kv[0][1] in METHODS else 99, _bkey(kv[0][2]))):
        ok = [c for c in cs if c["status"] == "ok"]
        def med(k):
            vals = [c[k] for c in ok if c.get(k) is not None]
            return round(statistics.median(vals), 4) if vals else None
        rows.append({"dataset": ds, "method": method, "budget": budget, "n_labels": cs[0].get("n_labels"),
                     "seeds_ok": len(ok), "seeds": len(cs), "macro_f1": med("macro_f1"), "accuracy": med("accuracy"),
                     "rare_f1": med("rare_f1"), "ece_before": med("ece_before"), "ece": med("ece"),
                     "macro_f1_min": min((c["macro_f1"] for c in ok), default=None),
                     "macro_f1_max": max((c["macro_f1"] for c in ok), default=None),
                     "train_s": med("train_s"), "peak_rss_mb": med("peak_rss_mb"),
                     "status": "ok" if ok else cs[0]["status"]})
    return rows


def transfer_cells(path: Path, cells: list[dict], datasets: dict[str, dict[str, Path]]) -> list[dict]:
    """benchmarks/transfer.py's per-seed results (on the data set its JSON names) as cells of this harness,
    for (method, budget) groups this sweep did not run. Both harnesses draw the same stratified sample per (budget, seed): TF-IDF, run in
    both, scores identically."""
    from transfer import METHODS as TRANSFER_NAMES  # its row names, e.g. "ulmfit fwd (general-en)"

    ours = {TRANSFER_NAMES["fwd"]: "ulmfit-fwd", TRANSFER_NAMES["both"]: "ulmfit-both", TRANSFER_NAMES["siatl"]: "siatl"}
    have = {(c["dataset"], c["method"], str(c["budget"])) for c in cells}
    results = read_json(path)
    ds = results.get("dataset", "tweets")  # files written before transfer.py took --dataset are the tweets'
    if ds not in datasets:
        return []
    n_train = len(read_split(Path(datasets[ds]["train"])))
    out = []
    for row in results["rows"]:
        method, budget = ours.get(row["method"]), str(row["labels"])
        if method is None or (ds, method, budget) in have:
            continue
        for c in row["cells"]:
            out.append({"dataset": ds, "method": method, "budget": budget, "seed": c["seed"], "status": "ok",
                        "n_labels": n_train if budget == "full" else int(budget), "macro_f1": c["macro_f1"],
                        "accuracy": c["accuracy"], "train_s": c["seconds"], "peak_rss_mb": None,
                        "source": str(path)})
    return out


def _bkey(b: str) -> float:
    return math.inf if b == "full" else float(b)


def plot(rows: list[dict], ds: str, path: Path, title_extra: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        pts = sorted((r["n_labels"], r["macro_f1"], r.get("macro_f1_min"), r.get("macro_f1_max")) for r in rows
                     if r["dataset"] == ds and r["method"] == method and r["macro_f1"] is not None)
        if not pts:
            continue
        xs, ys, lo, hi = zip(*pts)
        line, = ax.plot(xs, ys, marker="o", label=method)
        ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter
    ticks = sorted({r["n_labels"] for r in rows if r["dataset"] == ds and r["macro_f1"] is not None})
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(x):,}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled training examples (log scale)")
    ax.set_ylabel("test macro-F1 (median over seeds; band: min-max)")
    ax.set_title(f"{ds}: macro-F1 against the number of labels{title_extra}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main

def parse_seeds(spec: str) -> list[int]:
    """`--seeds 3` -> [0, 1, 2] (a count); `--seeds 0,2` or `--seeds 1,` -> those seeds (a comma list)."""
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()] if "," in spec else list(range(int(spec)))
    except ValueError:
        sys.exit(f"--seeds {spec!r}: expected a count N (seeds 0..N-1) or a comma list such as 0,1,2")
    if not seeds:
        sys.exit(f"--seeds {spec!r} selects no seed: a count is N >= 1 (--seeds 1 is seed 0); for one given seed "
                 f"write a list with a comma, e.g. --seeds 2,")
    return seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=None, help="comma list of tweets,spam,tweets-40-55-5 (default both, or none when --csv is given)")
    p.add_argument("--csv", action="append", default=[], help="train.csv,valid.csv,test.csv (repeatable)")
    p.add_argument("--csv-name", action="append", default=[], help="a name per --csv (default: the folder's name)")
    p.add_argument("--budgets", default="100,500,2000,full", help="labels per run; 'full' = the whole training split")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="3", help="a count N (seeds 0..N-1) or a comma list (0,2; one seed: 2,)")
    p.add_argument("--pretrained", default=None, help="passed to `ulmfit fit --pretrained` (a folder, a shipped "
                   "name, or none; default: the CLI's own default; --quick: none; not for ulmfit-minilm and ulmfit-default, "
                   "which choose no LM). A folder also gives fastai its start")
    p.add_argument("--no-fastai-pretrained", dest="fastai_pretrained", action="store_false",
                   help="fastai from random weights even when --pretrained is a folder")
    p.add_argument("--ulmfit-labels", choices=["harness", "cli"], default="harness",
                   help="harness: our sample as --train + the rest as --unlabeled; cli: --max-labels N")
    p.add_argument("--ulmfit-set", action="append", help="extra --set for `ulmfit fit` (repeatable)")
    p.add_argument("--quick", action="store_true", help="tiny data and models: checks the pipeline in minutes")
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of every subprocess (default: "
                   "torch's = cores; use 1 when another job shares the cores)")
    p.add_argument("--cell-timeout", type=float, default=6 * 3600, help="seconds per subprocess")
    p.add_argument("--no-embedding-cache", dest="cache_embeddings", action="store_false",
                   help="minilm-frozen: embed every cell's texts afresh (train_s then includes embedding)")
    p.add_argument("--keep-models", action="store_true", help="keep the trained model folders")
    p.add_argument("--ensemble-of", default=ENSEMBLE_OF, help="the cells the ensemble method averages (comma list of "
                   "methods, each run before it with --keep-models)")
    p.add_argument("--ensemble-weights", default=None, help="ensemble: fixed weights for `ulmfit ensemble --weights` "
                   "('equal' or one number per --ensemble-of cell); default: chosen on validation. The cell's name does not "
                   "say which: run a variant into its own --out (or with --redo)")
    p.add_argument("--redo", action="store_true", help="rerun cells that already have a result")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--summary-only", action="store_true", help="run no cell: summarise and plot the finished ones")
    p.add_argument("--with-transfer", action="append", default=[], metavar="JSON",
                   help="also summarise and plot benchmarks/transfer.py's cells (its results JSON; repeatable, one "
                        "per data set) for our methods at the budgets this sweep has no cell for (same samples)")
    a = p.parse_args()

    tag = "accuracy-quick" if a.quick else "accuracy"
    res_dir = Path(a.out) if a.out else RESULTS
    cell_root, work = res_dir / tag, res_dir / "work"
    names = a.datasets.split(",") if a.datasets else ([] if a.csv else ["tweets", "spam"])
    datasets = load_datasets(names, a.csv, a.csv_name)
    methods = a.methods.split(",")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        sys.exit(f"unknown method(s) {bad}; choose from {METHODS}")
    budgets = [b if b == "full" else int(b) for b in a.budgets.split(",")]
    seeds = parse_seeds(a.seeds)
    if a.threads:  # inherited by every subprocess (ulmfit and the peers alike)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(a.threads)
    caps = cli_caps()
    info = {"machine": machine_info(), "versions": package_versions(), "cli_flags": caps, "quick": a.quick,
            "argv": sys.argv, "pretrained": a.pretrained}
    print(f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, GPU {info['machine']['gpu']}; "
          f"ulmfit fit flags: {caps}", flush=True)

    t_start = time.perf_counter()
    for ds, raw in datasets.items():
        splits = prepare(ds, raw, a.quick, work)
        n_train = len(read_split(splits["train"]))
        for budget in [] if a.summary_only else budgets:
            if budget != "full" and budget >= n_train:
                print(f"{ds}: budget {budget} >= {n_train} training rows; skipped (use full)")
                continue
            for seed in seeds:
                for method in methods:
                    cell_id = f"{ds}__{method}__{budget}__s{seed}"
                    path = cell_root / f"{cell_id}.json"
                    if path.exists() and not a.redo and read_json(path).get("status") == "ok":
                        continue
                    cdir = work / tag / cell_id
                    cdir.mkdir(parents=True, exist_ok=True)
                    lab, rest, n_labels = budget_files(ds, splits, budget, seed, work, a.quick)
                    t0 = time.perf_counter()
                    print(f"[{time.strftime('%H:%M:%S')}] {cell_id} ...", end=" ", flush=True)
                    try:
                        if method == "ensemble":
                            r = run_ensemble(a, splits, ds, budget, seed, work / tag, cell_root, cdir)
                        elif method == "distill":
                            r = run_distill(a, splits, ds, budget, seed, lab, rest, work, work / tag, cdir)
                        elif method == "tfidf-model":
                            r = run_tfidf_model(a, splits, lab, seed, cdir)
                        elif method in ULMFIT_METHODS:
                            r = run_ulmfit(method, cell_id, a, caps, splits, lab, rest, budget, seed, cdir, print)
                        else:
                            r = run_peer(method, a, splits, lab, rest, seed, cdir)
                    except Exception as e:  # noqa: BLE001 - one broken cell must not stop a sweep
                        r = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
                    r.update({"dataset": ds, "method": method, "budget": budget, "n_labels": n_labels, "seed": seed,
                              "quick": a.quick, "cell_seconds": round(time.perf_counter() - t0, 1),
                              "machine": info["machine"], "harness_versions": info["versions"]})
                    write_json(path, r)
                    if r["status"] == "ok":
                        print(f"macro-F1 {r['macro_f1']:.4f} acc {r['accuracy']:.4f} train {r['train_s']:.0f}s "
                              f"RSS {r['peak_rss_mb']:.0f} MB", flush=True)
                    else:
                        print(f"{r['status']}: {r.get('reason') or r.get('log_tail', '')[-300:]}", flush=True)

    cells = [read_json(f) for f in sorted(cell_root.glob("*.json"))]
    selected = {(ds, m, str(b), s) for ds in datasets for m in methods for b in budgets for s in seeds}
    n_other = sum((c["dataset"], c["method"], str(c["budget"]), c["seed"]) not in selected for c in cells)
    if n_other:
        print(f"summary: {len(cells)} cells in {cell_root}/, {n_other} of them from earlier runs outside this selection")
    for path in [] if a.quick else a.with_transfer:
        cells += transfer_cells(Path(path), cells, datasets)
    rows = summarise(cells)
    print()
    print(table(rows, ["dataset", "method", "budget", "n_labels", "seeds_ok", "macro_f1", "accuracy", "rare_f1",
                       "ece_before", "ece", "train_s", "peak_rss_mb", "status"],
                {"macro_f1": ".4f", "accuracy": ".4f", "rare_f1": ".4f", "ece_before": ".4f", "ece": ".4f",
                 "train_s": ".0f", "peak_rss_mb": ".0f"}))
    summary = {**info, "sweep_seconds": round(time.perf_counter() - t_start, 1), "datasets": {k: {s: str(v) for s, v in d.items()} for k, d in datasets.items()},
               "this_run": {"methods": methods, "budgets": budgets, "seeds": seeds}, "summary": rows, "cells": len(cells)}
    write_json(res_dir / f"{tag}.json", summary)
    for ds in sorted({r["dataset"] for r in rows}):
        png = res_dir / f"{tag}_{ds}.png"
        plot(rows, ds, png, " (--quick: pipeline check only)" if a.quick else "")
        print(f"plot: {png}")
    print(f"summary: {res_dir / f'{tag}.json'}; cells: {cell_root}/")


if __name__ == "__main__":
    main()
