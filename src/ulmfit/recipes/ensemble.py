"""`ulmfit ensemble DIR... --valid V --out DIR`: a weighted average of finished classifiers' class
probabilities (e.g. an AWD-LSTM model and a MiniLM model), weights chosen on a validation file.

Candidates: every point of the simplex grid with step 1/`grid` (weights >= 0, summing to 1; 66
points for 3 members at grid 10). With many members the grid grows fast, so `grid` shrinks until it
has at most `MAX_POINTS` points. A point is scored by the macro-F1 (the selection metric of `ulmfit
fit`) of what the ensemble would decide with it, ties broken by lower log-loss, then by closeness to
equal weights. Two rules pick a point from scores on some rows: "blend" takes the best grid point;
"best member" takes the best of the grid's corners (weight 1 on one member).

What a point decides: each member's decision rule (the bias of its calibration.json on its calibrated
probabilities, recipes/posthoc.py; zeros for an argmax member) weighted like its probabilities,
argmax(log sum_m w_m p_m + sum_m w_m b_m), saved as the ensemble's calibration.json. At a corner that
is the member's own decision, exactly; in between, the members' rules mix as their probabilities do,
and no rule is tuned again on the split that chooses the weights. Scoring the plain
argmax instead compared members on decisions neither makes: on the 40/55/5 tweets (500 labels, seed 5)
the MiniLM member scored 0.5264 on its argmax and 0.6170 with its rule, its distilled student 0.5330 and
0.6142; the argmax rule kept the student, 3.2 points below the MiniLM model on test, where the rule of
this module blends the two (0.60 / 0.40) and scores 0.6202 (docs/BENCHMARKS.md). And a blend chosen
on argmax was predicted by argmax, without the rare class's rule. Deciding the chosen blend by its plain
argmax, or by the weighted rules only where they beat that argmax in 95% of validation resamples, was
measured on 11 recorded member sets, 12 distinct choices of weights (thirty-third session,
benchmarks/ensemble_rules.py --decisions): on held-out rows the argmax was behind the weighted rules on 9,
and the gate on 2 of the 3 it changed.

Why not simply the best grid point on the validation split: the members already chose their epoch
(and decision rule) on that split, and the best of 66 points is the luckiest of 66 draws of its
noise. At 2,000 tweet labels (seed 0) it gave fwd 0.2 / bwd 0.3 / MiniLM 0.5 with validation
macro-F1 0.7434 against the MiniLM member's 0.7360, and lost to that member on the test split
(0.7215 vs 0.7254). So the choice itself is validated, out of fold, and the blend must earn its place:

1. Out of fold (`FOLDS`-fold stratified, `REPEATS` reshuffles, fixed seeds): for each fold every
   rule picks its point on the other folds, and that point predicts the held-out fold. Every
   validation row then has an out-of-fold prediction per repeat and rule, made by a choice that did
   not see it; each rule's out-of-fold macro-F1 (mean over the repeats) is what the rule is worth on
   new rows, its own selection noise included.
2. The fallback (the `anchor`, `ANCHOR` by default: "top average") is settled first, on all the rows:
   the plain average of the members validation cannot tell from the best one. Each member is scored by
   its own decision; one the best member beats in at least `CONFIDENCE` of paired bootstrap resamples of
   the rows (`BOOTSTRAP`, a one-sided test at 5%) is behind and left out (`top_members`). Members of one
   strength are averaged; a member clearly ahead of all others is the fallback alone. The challenger,
   the better of "blend" and "best member" out of fold, replaces the fallback only when its gain is
   positive in at least `CONFIDENCE` of paired resamples (the same rows for both rules).
3. The kept rule then picks its point on all the validation rows: those are the weights, and the
   weighted members' rules the ensemble's. When they keep one member alone, the ensemble predicts
   exactly what the member predicts (its probabilities are already calibrated).
4. A blend is calibrated (`blend_calibration`): an average of calibrated members is not calibrated
   (two members with partly independent errors average to an under-confident blend), so the blend's
   probabilities get a temperature (or BCTS) fitted on the validation rows as a single model's are
   (`train.calibration.fit_posthoc`), and the members' weighted rule is carried onto them: the same
   labels, calibrated probabilities. 40/55/5 tweets, 500 labels, the four seeds of seven where the
   rule blended: test ECE 0.036 / 0.041 / 0.035 / 0.042 -> 0.021 / 0.033 / 0.021 / 0.041, NLL lower on
   all four, no label changed (docs/BENCHMARKS.md).

Fixed weights (`--weights equal` or `--weights 0.5,0.5`, `fixed_weights`) skip the choice: the members are
averaged with the given weights, and the validation split only calibrates the blend (step 4) and scores it.
That is the plain average of a deep ensemble (Lakshminarayanan et al. 2017): members of one kind trained
with different seeds, of equal strength by construction. At 2,000 tweet labels (3 seeds; docs/BENCHMARKS.md,
seventeenth session) two MiniLM models (the second trained with another seed on the same labels) and their
distilled AWD-LSTM student, averaged equally, scored a test median of 0.7435 against 0.7338 for one MiniLM
model and 0.7376 for the rule's choice with the "best member" fallback of the day (ahead on every seed; that
rule kept one member on 2 of 3 seeds; the "top average" fallback below was not measured on them).

The fallback of step 2 is the `anchor` (`choose_weights`, `ulmfit ensemble --anchor`). "Top average" (`ANCHOR`,
the default since the twenty-ninth session) as above. "Best member", the default before it and what `fit`'s
few-label path keeps (recipes/few_labels.py: a teacher and its own student), weight 1 on the best single member
unless the best grid point beats it. "Equal", the plain average of all members. "Best member or equal",
whichever of those two scores higher out of fold. Why the default moved (docs/BENCHMARKS.md, twenty-first,
twenty-eighth and twenty-ninth sessions; scored on labelled training rows outside each label sample that no
member trained on, "rest", benchmarks/ensemble_rules.py): members of one strength that read the text
differently (the e-mail's AWD-LSTM pair and MiniLM model, a few validation e-mails apart) gain from their
average on held-out rows nearly every time (over 18 member sets the plain average was ahead of "best member"
on 14, median +0.35 macro-F1), a gain the "best member" fallback throws away because the bootstrap cannot
show it on ~600 validation rows. Its three losses were members of unequal strength: MiniLM 5 points above
the AWD-LSTM pair at 100 tweet labels (-0.44), a TF-IDF member in a trio (-0.37), a teacher and its own
student (-0.47). "Top average" keeps the gain and the guard: on the 500-label e-mail (3 seeds, A + M and
A + M + T) it averaged A and M every time and left the TF-IDF member out every time (+0.48 to +0.85 on rest
against "best member"); at 100 tweet labels it found the AWD-LSTM pair behind (in 100% of resamples) and
kept MiniLM, where the plain average lost 0.34 on rest.
Shrinking the chosen weights toward equal weights was considered and not used: with members of
unequal strength (on the tweets the MiniLM member is 6-8 points of macro-F1 above the AWD-LSTM ones)
equal weights are the wrong anchor of a shrinkage; step 2's fallback averages only the members validation
cannot tell from the best. Everything is numpy on [points, rows] arrays (`macro_f1_many` scores every point on every
fold at once): 3 members x 2,500 rows take well under a second. Which rule decided and the
out-of-fold figures go to valid_metrics.json ("selection"), report.md and the log.

The ensemble folder is a model folder (`ulmfit.load`, `predict`, `evaluate` work on it):
```
OUT/ulmfit.json          marker: kind "ensemble", classes, members [{path, weight, source}]
OUT/members/m0/ ...      a full copy of each member folder (so OUT moves and reloads by itself)
OUT/valid_metrics.json   the ensemble's and each member's validation metrics, the weights, the selection
OUT/calibration.json     the blend's calibration and the members' decision rules, weighted (absent when one
                         member decides alone by its argmax)
OUT/report.md
```
Members are copied in, not referenced: a model folder that depends on paths outside itself breaks
when either is moved or deleted. The copy costs disk (a MiniLM member is ~90 MB).
"""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ulmfit.data.readers import read_table
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json, atomic_write_text, staging_path, swap_in, write_lock
from ulmfit.recipes import model_dir
from ulmfit.recipes.posthoc import CALIBRATION_FILE
from ulmfit.recipes.config import ImbalanceConfig
from ulmfit.train.calibration import (apply, calibration_line, decide, fit_posthoc, handed_bias, macro_f1,
                                      macro_f1_many, scale)
from ulmfit.train.metrics import classification_metrics, format_report

MAX_POINTS = 5000  # grid points scored at most (each is one [n, C] weighted sum + macro-F1 per fold)
MEMBERS_DIR = "members"
# The out-of-fold check of the weight rule (module docstring, steps 1-2):
FOLDS = 5  # each choice sees 4/5 of the validation rows; a held-out fifth keeps every class present
REPEATS = 10  # reshuffles of the folds, so the out-of-fold score does not hinge on one partition
BOOTSTRAP = 1000  # paired resamples of the validation rows for the gain's noise (the 5% tail: 50 draws)
CONFIDENCE = 0.95  # a challenger (the blend) is kept when its gain over the anchor is positive in >= 95% of resamples
ANCHORS = ("best member", "equal", "best member or equal", "top average")
ANCHOR = "top average"  # what the rule keeps unless a challenger beats it beyond noise (docstring, step 2)
SEED = 0  # folds use seeds SEED..SEED+REPEATS-1, the bootstrap SEED: the same inputs give the same weights
POINT_CHUNK = 512  # grid points averaged at a time ([chunk, n, C] float64): bounded memory at MAX_POINTS


def simplex_grid(k: int, grid: int) -> np.ndarray:
    """All weight vectors of `k` non-negative multiples of 1/grid that sum to 1: [n_points, k]."""
    if k < 1 or grid < 1:
        raise ValueError(f"simplex_grid needs k >= 1 and grid >= 1, got {k}, {grid}")
    points = [np.diff([0, *cuts, grid]) for cuts in itertools.combinations_with_replacement(range(grid + 1), k - 1)]
    return np.array(points, dtype=np.float64) / grid


def grid_for(k: int, grid: int = 10) -> int:
    """The finest step <= 1/grid whose simplex grid for `k` members has at most MAX_POINTS points."""
    from math import comb

    while grid > 1 and comb(grid + k - 1, k - 1) > MAX_POINTS:
        grid -= 1
    return grid


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def point_predictions(probs: Sequence[np.ndarray], y: np.ndarray, points: np.ndarray,
                      biases: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every grid point: its predicted class per row [G, n] and the row's log-loss [G, n], the
    average computed as the predictor computes it (float64 sum, float32 result: `weighted`) and decided
    as the loaded ensemble decides it (`apply` with temperature 1 and the weighted members' biases
    [k, C]; None: every member's argmax)."""
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs])  # [k, n, C]
    biases = np.zeros((len(probs), stack.shape[2])) if biases is None else np.asarray(biases, dtype=np.float64)
    preds = np.empty((len(points), len(y)), dtype=np.int64)
    nll = np.empty((len(points), len(y)), dtype=np.float64)
    for i in range(0, len(points), POINT_CHUNK):
        avg = np.tensordot(points[i:i + POINT_CHUNK], stack, 1).astype(np.float32)  # [g, n, C]
        bias = (points[i:i + POINT_CHUNK] @ biases)[:, None, :]  # [g, 1, C]
        preds[i:i + POINT_CHUNK] = decide(scale(avg, 1.0).astype(np.float32), bias)
        nll[i:i + POINT_CHUNK] = -np.log(np.clip(avg[:, np.arange(len(y)), y], 1e-12, 1.0))
    return preds, nll


def pick(f1: np.ndarray, nll: np.ndarray, dist: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """For each row subset (rows of f1 / nll [F, G]): the allowed point with the best (macro-F1,
    -log-loss, -distance to equal weights), then the lowest index. Returns point indices [F]."""
    f1, nll = np.round(f1[:, allowed], 12), np.round(nll[:, allowed], 12)
    return np.array([allowed[np.lexsort((dist[allowed], nll[f], -f1[f]))[0]] for f in range(len(f1))])


def fold_masks(y: np.ndarray) -> np.ndarray:
    """The held-out fold of every row for each repeat: [REPEATS, n] (train/crossval.py's stratified folds)."""
    from ulmfit.train.crossval import n_folds, stratified_folds

    k = n_folds(y, FOLDS)
    return np.stack([stratified_folds(y, k, SEED + r) for r in range(REPEATS)])


def out_of_fold(preds: np.ndarray, nll: np.ndarray, y: np.ndarray, C: int, dist: np.ndarray,
                rules: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Each rule's out-of-fold predictions [REPEATS, n]: for every fold of every repeat, the rule picks
    a point on the other folds and that point predicts the held-out fold. Returns them and the folds."""
    folds = fold_masks(y)  # [R, n]
    n_fold = int(folds.max()) + 1
    train = np.concatenate([(folds[r] != f)[None] for r in range(REPEATS) for f in range(n_fold)]).astype(np.float64)
    f1_train = macro_f1_many(y, preds, C, train)  # [R * folds, G]
    nll_train = train @ nll.T / train.sum(1, keepdims=True)
    rows = np.arange(len(y))
    oof = {}
    for name, allowed in rules.items():
        chosen = pick(f1_train, nll_train, dist, allowed).reshape(REPEATS, n_fold)
        oof[name] = np.stack([preds[chosen[r][folds[r]], rows] for r in range(REPEATS)])
    return oof, n_fold


def bootstrap_draws(n: int) -> np.ndarray:
    """`BOOTSTRAP` resamples of n rows as multiplicities (seeded by `SEED`): [BOOTSTRAP, n], float64."""
    return np.random.default_rng(SEED).multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP).astype(np.float64)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, y: np.ndarray, C: int) -> np.ndarray:
    """The gain in macro-F1 (mean over the repeats) of predictions `a` over `b` (both [R, n]) on each of
    BOOTSTRAP resamples of the rows, the same resampled rows for both: [BOOTSTRAP]."""
    draws = bootstrap_draws(len(y))
    return macro_f1_many(y, a, C, draws).mean(1) - macro_f1_many(y, b, C, draws).mean(1)


def top_members(preds: np.ndarray, y: np.ndarray, C: int, best: int) -> tuple[list[int], list[float]]:
    """The members validation cannot tell from the best one (`best`), each scored by its own decision
    (`preds` [k, n]): member j is behind when the best member's macro-F1 beats j's in at least `CONFIDENCE`
    of the paired bootstrap resamples (every member scored on the same resamples, in one pass). Returns (the
    members not behind, best first; each member's share of resamples the best beats it in, 0 for the best)."""
    f1 = macro_f1_many(y, preds, C, bootstrap_draws(len(y)))  # [BOOTSTRAP, k]
    shares = [float(v) for v in np.mean(f1[:, [best]] > f1, axis=0)]
    return [best] + [j for j in range(len(preds)) if j != best and shares[j] < CONFIDENCE], shares


def choose_weights(probs: Sequence[np.ndarray], y: np.ndarray, classes: list[str], grid: int = 10,
                   biases: np.ndarray | None = None, anchor: str | None = None) -> tuple[np.ndarray, dict]:
    """The weights by the module's rule: the `anchor` ("best member": weight 1 on the best single member;
    "equal": the plain average; "top average": the plain average of the members validation cannot tell
    from the best, `top_members`; None: `ANCHOR`) unless a challenger's out-of-fold gain over it is positive
    beyond the bootstrap's noise. The challenger of "best member" is the best grid point ("blend"); that of
    "equal" and "top average" is the better of "blend" and "best member" out of fold.
    `biases` [k, C]: the members' decision rules (`Classifier.bias_in`; None: argmax members).
    Returns (weights, the selection record for valid_metrics.json)."""
    anchor = ANCHOR if anchor is None else anchor
    if anchor not in ANCHORS:
        raise ValueError(f"choose_weights: anchor {anchor!r}, expected one of {ANCHORS}")
    y = np.asarray(y, dtype=np.int64)
    if len(y) < 2 * FOLDS:
        raise UlmfitError(f"ensemble: the validation file has {len(y)} labelled rows; choosing weights out of fold "
                          f"needs at least {2 * FOLDS}; pass a larger --valid file")
    k, C = len(probs), len(classes)
    grid_points = simplex_grid(k, grid_for(k, grid))
    top, behind = None, None
    if anchor == "top average":  # which members to average is settled on all rows before the rules are scored
        corner_preds, corner_nll = point_predictions(probs, y, np.eye(k), biases)
        leader = int(pick(macro_f1_many(y, corner_preds, C)[None], corner_nll.mean(1)[None], np.zeros(k),
                          np.arange(k))[0])  # the best member as the "best member" rule picks it
        top, behind = top_members(corner_preds, y, C, leader)
        if len(top) == 1:
            anchor = "best member"  # every other member is behind the best beyond noise
    extra = [np.full(k, 1.0 / k)]  # 1/3 is off a grid of tenths; so is 1/3 on three of four members
    if top is not None and 1 < len(top) < k:
        extra.append(np.isin(np.arange(k), top) / len(top))
    extra = [w for w in extra if not np.isclose(grid_points, w).all(1).any()]
    points = np.vstack([grid_points, *extra]) if extra else grid_points
    dist = np.abs(points - 1.0 / k).sum(1)
    at = lambda w: np.flatnonzero(np.isclose(points, w).all(1))[:1]  # noqa: E731 (the index of one point)
    rules = {"blend": np.arange(len(grid_points)), "best member": np.flatnonzero(points.max(1) == 1.0),
             "equal": at(np.full(k, 1.0 / k))}
    if anchor == "top average":
        rules["top average"] = at(np.isin(np.arange(k), top) / len(top))
    preds, nll = point_predictions(probs, y, points, biases)
    oof, n_fold = out_of_fold(preds, nll, y, C, dist, rules)
    score = {name: float(macro_f1_many(y, p, C).mean()) for name, p in oof.items()}
    if anchor == "best member or equal":  # the better of the two out of fold (a tie: equal, which chose nothing)
        anchor = "equal" if score["equal"] >= score["best member"] else "best member"
        challenger = "blend"
    else:
        challenger = "blend" if anchor == "best member" else max(("blend", "best member"), key=lambda r: score[r])
    gains = paired_bootstrap(oof[challenger], oof[anchor], y, C)
    gain, share = score[challenger] - score[anchor], float(np.mean(gains > 0))
    rule = challenger if gain > 0 and share >= CONFIDENCE else anchor
    f1_all, nll_all = macro_f1_many(y, preds, C, np.ones((1, len(y)))), nll.mean(1)[None]
    best = {name: int(pick(f1_all, nll_all, dist, allowed)[0]) for name, allowed in rules.items()}
    record = {
        "rule": rule, "anchor": anchor, "challenger": challenger, "points": len(grid_points),
        "macro_f1": float(f1_all[0, best[rule]]),
        "log_loss": float(nll_all[0, best[rule]]), "blend_weights": [float(v) for v in points[best["blend"]]],
        "best_member": int(np.argmax(points[best["best member"]])),
        "out_of_fold": {"folds": n_fold, "repeats": REPEATS, "blend_macro_f1": score["blend"],
                        "best_member_macro_f1": score["best member"], "equal_macro_f1": score["equal"],
                        **({"top_average_macro_f1": score["top average"]} if "top average" in score else {}),
                        "gain": gain, "gain_positive_share": share,
                        "bootstrap": BOOTSTRAP, "confidence": CONFIDENCE,
                        "gain_5th_percentile": float(np.quantile(gains, 1 - CONFIDENCE))}}
    if top is not None:  # the members the "top average" anchor averages, and how clearly the best beats each
        record.update(top_members=top, best_beats_share=behind)
    return points[best[rule]], record


def selection_line(info: dict) -> str:
    """One sentence on which rule decided and why (the log and report.md)."""
    if info["rule"] == "fixed":
        return f"rule: fixed weights (--weights {info['given']}), not chosen on the validation split"
    o = info["out_of_fold"]
    anchor, challenger = info.get("anchor", "best member"), info.get("challenger", "blend")
    why = (f"out-of-fold macro-F1 {challenger} {o[challenger.replace(' ', '_') + '_macro_f1']:.4f} vs {anchor} "
           f"{o[anchor.replace(' ', '_') + '_macro_f1']:.4f} (gain {o['gain']:+.4f}, positive in "
           f"{o['gain_positive_share']:.0%} of {o['bootstrap']} paired bootstrap resamples, {o['confidence']:.0%} "
           f"needed; {o['folds']}-fold x {o['repeats']} repeats)")
    blend = ", ".join(f"{v:.2f}" for v in info["blend_weights"])
    if info["rule"] == "blend":
        return f"rule: blend (the best of {info['points']} grid points: {blend}) kept: {why}"
    if info["rule"] == "equal":
        return f"rule: equal weights (no rule beat the plain average beyond noise): {why}"
    if info["rule"] == "top average":
        top, k = info["top_members"], len(info["best_beats_share"])
        rest = "the others are behind it beyond noise" if len(top) < k else "none is behind it beyond noise"
        return (f"rule: the plain average of members {', '.join(map(str, top))} (validation cannot tell them from "
                f"the best; {rest}), as no rule beat it beyond noise: {why}")
    return f"rule: best member (member {info['best_member']} alone; the blend would be {blend}): {why}"


def fixed_weights(spec: str, k: int) -> np.ndarray:
    """`--weights`: "equal" (1/k each) or k comma-separated non-negative numbers (scaled to sum to 1)."""
    if spec.strip().lower() == "equal":
        return np.full(k, 1.0 / k)
    try:
        w = np.array([float(v) for v in spec.split(",")], dtype=np.float64)
    except ValueError:
        w = np.array([np.nan])
    if len(w) != k or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise UlmfitError(f"--weights {spec}: give 'equal' or {k} non-negative numbers separated by commas (one per "
                          f"model folder, in their order, not all zero), e.g. --weights {','.join(['1'] * k)}")
    return w / w.sum()


def fixed_selection(spec: str, probs: Sequence[np.ndarray], y: np.ndarray, classes: list[str],
                    biases: np.ndarray) -> tuple[np.ndarray, dict]:
    """`choose_weights`' counterpart for fixed weights (`fixed_weights`' spec): (weights, the selection record)."""
    weights = fixed_weights(spec, len(probs))
    preds, nll = point_predictions(probs, y, weights[None], biases)
    return weights, {"rule": "fixed", "given": spec, "points": 1, "log_loss": float(nll.mean()),
                     "macro_f1": float(macro_f1_many(y, preds, len(classes))[0]),
                     "blend_weights": [float(v) for v in weights], "best_member": int(np.argmax(weights))}


def weighted(probs: Sequence[np.ndarray], w: Sequence[float]) -> np.ndarray:
    """The members' probabilities averaged with weights `w` by the predictor's rule (`predictor.average`),
    so the weights are chosen, and valid_metrics.json is written, on what the loaded ensemble predicts."""
    from ulmfit.recipes.predictor import average

    return average(dict(enumerate(probs)), dict(enumerate(w)))


def member_probs(model, classes: list[str], texts: list[str]) -> np.ndarray:
    """A member's probabilities with columns in `classes` order."""
    p = model.predict_proba(texts)
    return p[:, [model.classes.index(c) for c in classes]]


def build_ensemble(members: Sequence[str | Path], valid: str | Path, out: str | Path, *, text_col: str = "text",
                   label_col: str = "label", encoding: str = "utf-8", grid: int = 10, overwrite: bool = False,
                   fixed: str | None = None, anchor: str | None = None, log: Callable[[str], None] = lambda m: None):
    """Copy the members into `out`, choose weights on `valid` (`choose_weights` with `anchor`; or take `fixed`,
    `fixed_weights`' spec) and write its marker (`write_ensemble`); returns the loaded ensemble."""
    from ulmfit.recipes.predictor import Classifier

    out = Path(out)
    if len(members) < 2:
        raise UlmfitError(f"ensemble: give at least two model folders, got {len(members)}")
    if fixed is not None:
        fixed_weights(fixed, len(members))  # a wrong --weights is refused before anything is copied
        if anchor is not None:
            raise UlmfitError("ensemble: --weights fixes the weights and --anchor chooses them; pass one of the two")
    if anchor is not None and anchor not in ANCHORS:
        raise UlmfitError(f"ensemble: --anchor {anchor}: choose one of {', '.join(a.replace(' ', '-') for a in ANCHORS)}")
    for m in members:
        if Path(m).resolve() == out.resolve() or out.resolve() in Path(m).resolve().parents:
            raise UlmfitError(f"ensemble: --out {out} is (or holds) the member {m}; choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UlmfitError(f"{out} already exists and is not empty; choose another --out, or pass --overwrite")
    classes = [model_dir.classifier_marker(m)["classes"] for m in members]
    for m, c in zip(members, classes):
        if set(c) != set(classes[0]):
            raise UlmfitError(f"ensemble: {m} predicts classes {c} but {members[0]} predicts {classes[0]}; "
                              f"members must share their classes")
    table = read_table(Path(valid), text_col=text_col, label_col=label_col, encoding=encoding)
    with write_lock(out):  # built beside `out`, swapped in whole: an old ensemble stays intact until then
        stage = staging_path(out)
        shutil.rmtree(stage, ignore_errors=True)
        try:
            for i, m in enumerate(members):
                shutil.copytree(m, stage / MEMBERS_DIR / f"m{i}", ignore=shutil.ignore_patterns("checkpoints"))
            write_ensemble(stage, [str(Path(m).resolve()) for m in members], table.texts, table.labels, table.source,
                           str(Path(valid).resolve()), grid=grid, log=log, names=[str(m) for m in members],
                           fixed=fixed, anchor=anchor)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)  # nothing half-built left beside `out`
            raise
        swap_in(stage, out)
    return Classifier(out)


def write_ensemble(out: Path, sources: Sequence[str], texts: Sequence[str], labels: Sequence[str], source: str,
                   valid: str, *, grid: int = 10, log: Callable[[str], None] = lambda m: None,
                   names: Sequence[str] | None = None, preamble: str = "", fixed: str | None = None,
                   anchor: str | None = None) -> dict:
    """The ensemble of the model folders already in `out`/members/m0, m1, ... (`sources`: where each came
    from, recorded in the marker): weights chosen on the labelled rows `texts` / `labels` (`source` names
    them in the report, `valid` in the marker), then calibration.json, valid_metrics.json, report.md
    (`preamble` first) and the marker, last. `names`: the members as the log and the rule name them
    (default `sources`). `fixed`: fixed weights (`fixed_weights`' spec) instead of the rule's choice;
    `anchor`: the rule's fallback (`choose_weights`; None: `ANCHOR`).
    `ulmfit ensemble` copies its members in first; `fit`'s few-label path trains
    them there (recipes/few_labels.py). Returns the validation metrics."""
    from ulmfit.recipes.predictor import BUILD_PRECISION, Classifier

    names = list(names or sources)
    folders = [out / MEMBERS_DIR / f"m{i}" for i in range(len(sources))]
    models = [Classifier(f, precision=BUILD_PRECISION) for f in folders]  # the weights: the same on every CPU
    classes = models[0].classes
    unseen = sorted(set(str(l).strip() for l in labels) - set(classes))
    if unseen:
        raise UlmfitError(f"{source}: labels {unseen[:5]} are not classes of the members ({classes})")
    y = np.array([classes.index(str(l).strip()) for l in labels], dtype=np.int64)
    probs, biases = [], np.stack([model.bias_in(classes) for model in models])  # biases [k, C]
    for name, model, b in zip(names, models, biases):
        probs.append(member_probs(model, classes, list(texts)))
        f1 = classification_metrics(y, decide(probs[-1], b), classes)["macro_f1"]
        log(f"member {name}: validation macro-F1 {f1:.4f} (its decision rule), log-loss {log_loss(probs[-1], y):.4f}")
    weights, selection = (choose_weights(probs, y, classes, grid, biases, anchor) if fixed is None
                          else fixed_selection(fixed, probs, y, classes, biases))
    log(selection_line(selection))
    log(f"weights {', '.join(f'{w:.2f}' for w in weights)} (validation macro-F1 {selection['macro_f1']:.4f}, "
        f"log-loss {selection['log_loss']:.4f})")
    rule = blend_calibration(weighted(probs, weights), y, classes, weights, decision_rule(weights, biases, names))
    metrics = _write(out, sources, weights, selection, rule, probs, biases, y, classes, source, valid, preamble)
    if rule and "valid" in rule:
        log(f"calibration of the blend: {calibration_line(rule, classes)}")
    if rule and rule["decision_rule"] == "members":
        log(f"decision rule: {rule['source']} (bias {', '.join(f'{b:+.2f}' for b in rule['members_bias'])} on the "
            f"blend): validation macro-F1 {metrics['macro_f1']:.4f} with it")
    return metrics


def decision_rule(weights: np.ndarray, biases: np.ndarray, members) -> dict | None:
    """The members' decision rules weighted like their probabilities, on the uncalibrated blend
    (temperature 1; the bias in the ensemble's class order): a blend's is then moved onto its calibrated
    probabilities (`blend_calibration`). One member kept alone: exactly its rule, so the ensemble
    predicts what that member predicts. None when every member decides by argmax."""
    bias = weights @ biases
    if not bias.any():
        return None
    kept = [str(m) for m, w in zip(members, weights) if w > 0]
    source = f"{kept[0]}'s rule" if len(kept) == 1 else "the weighted rules of " + ", ".join(kept)
    return {"format": 1, "temperature": 1.0, "decision_rule": "members", "bias": [float(b) for b in bias],
            "members_bias": [float(b) for b in bias], "source": source}


def blend_calibration(avg: np.ndarray, y: np.ndarray, classes: list[str], weights: np.ndarray,
                      rule: dict | None) -> dict | None:
    """The ensemble's calibration.json. One member kept alone: its rule as it is (`rule`; its probabilities
    are already calibrated, so the ensemble predicts exactly what the member does). A blend: averaging
    calibrated members does not give calibrated probabilities (on the 40/55/5 tweets at 500 labels the
    blends of a MiniLM model and its student were under-confident, test ECE 0.035-0.042 against the
    MiniLM model's 0.014-0.024), so the blend is calibrated like a single model (`fit_posthoc`: plain T or
    BCTS by out-of-half NLL, no rule tuned again), and the members' weighted rule is carried onto the
    handed-out probabilities (`handed_bias`): the same labels, now with calibrated probabilities."""
    if weights.max() == 1.0:
        return rule
    members = np.zeros(len(classes)) if rule is None else np.asarray(rule["bias"], dtype=np.float64)
    post = fit_posthoc(avg, y, classes, ImbalanceConfig(decision_rule="none"), SEED)
    post.pop("tuned_bias", None)  # no rule was tuned here: the members' rule is `members_bias`
    post.update(decision_rule="members" if rule else "none", members_bias=[float(b) for b in members],
                bias=handed_bias(members if rule else None, 1.0, post["temperature"], post["calibration_bias"],
                                 len(classes)),
                source=rule["source"] if rule else "the blend's argmax")
    post["valid"]["macro_f1_rule"] = macro_f1(y, apply(avg, post)[1], len(classes))  # the members' rule, not re-tuned
    return post


def _write(out: Path, sources, weights, selection: dict, rule: dict | None, probs, biases, y, classes, source: str,
           valid: str, preamble: str = "") -> dict:
    entries = [{"path": f"{MEMBERS_DIR}/m{i}", "weight": float(w), "source": str(m)}
               for i, (m, w) in enumerate(zip(sources, weights))]
    avg = weighted(probs, weights)
    if rule:
        atomic_write_json(out / CALIBRATION_FILE, rule)
    metrics = classification_metrics(y, apply(avg, rule)[1], classes)  # what the loaded ensemble predicts
    metrics["log_loss"] = log_loss(avg, y)  # of the blend before its calibration, as the weights were scored
    if rule and "valid" in rule:  # a calibrated blend (`blend_calibration`)
        metrics.update(temperature=rule["temperature"], calibration=rule["calibration"],
                       ece_before=rule["valid"]["ece_before"], ece_after=rule["valid"]["ece_after"])
    metrics["weights"] = [float(w) for w in weights]
    metrics["selection"] = selection  # which rule decided, with the out-of-fold figures (module docstring)
    metrics["by_member"] = {e["path"]: classification_metrics(y, decide(p, b), classes)  # each by its own rule
                            for e, p, b in zip(entries, probs, biases)}
    atomic_write_json(out / "valid_metrics.json", metrics)
    rows = "\n".join(f"| {e['path']} ({e['source']}) | {e['weight']:.2f} | {metrics['by_member'][e['path']]['macro_f1']:.4f} |"
                     for e in entries)
    atomic_write_text(out / "report.md", (
        f"# ulmfit ensemble report\n\n{preamble}Weighted average of {len(entries)} classifiers' probabilities; "
        + (f"weights given (--weights {selection['given']}), scored on {source} ({len(y)} texts).\n\n"
           if selection["rule"] == "fixed" else
           f"weights chosen on {source} ({len(y)} texts) by macro-F1 (ties: log-loss) over {selection['points']} grid "
           f"points, the blend kept only when it beats the rule's fallback ({selection['anchor']}) out of fold beyond "
           f"noise.\n\n")
        + f"{selection_line(selection)}.\n\n"
        + (f"Calibration of the blend: {calibration_line(rule, classes)}\n\n" if rule and "valid" in rule else "")
        + (f"Decision rule: {rule['source']} (bias {[round(b, 4) for b in rule['members_bias']]} on the blend; "
           f"calibration.json).\n\n" if rule and rule["decision_rule"] == "members" else "")
        + f"| member | weight | validation macro-F1 |\n|---|---|---|\n{rows}\n| ensemble | | {metrics['macro_f1']:.4f} |\n\n"
        f"```\n{format_report(metrics, classes)}\n```\n"))
    model_dir.write_marker(out, "ensemble", classes=classes, members=entries,
                           metric="macro_f1", valid=valid)
    return metrics
