"""Imbalanced classes and post-hoc decisions on validation probabilities (issue 21).

Pure functions on arrays (no model, no file), used by every recipe through small hooks:

- `weighting_rule` / `class_weights`: weight the training loss when the class frequencies differ by
  more than the `imbalance.ratio` of the config: inverse frequency (sklearn's "balanced") or the effective
  number of samples (Cui et al., CVPR 2019, "Class-Balanced Loss Based on Effective Number of
  Samples", §3: E_n = (1 - beta^n) / (1 - beta)); off for balanced data. Rule "adjusted" weights
  nothing and shifts the training logits by `log_prior` instead (train/tasks.py `ClassLoss`).
- `fit_temperature` / `ece`: temperature scaling (Guo et al., ICML 2017, "On Calibration of Modern
  Neural Networks", §4.2): one scalar T fitted on the validation split by minimising the NLL of
  softmax(log p / T); the expected calibration error (§2, equal-width bins of the top probability).
- `fit_bcts`: bias-corrected temperature scaling (Alexandari et al., ICML 2020, "Maximum Likelihood
  with Bias-Corrected Calibration is Hard-To-Beat at Label Shift Adaptation", §3): softmax(log p / T + c)
  with a per-class shift c (c_0 = 0), fitted by NLL (L-BFGS). A model trained with a class-weighted
  loss carries a prior shift (the rare class inflated) that one T cannot undo; c can. `scale` is the
  one place either is applied.
- `tune_bias` / `prior_bias`: a decision rule, argmax(log p + b), tuned on the validation split:
  a per-class additive bias found by coordinate search maximising macro-F1, or prior correction
  (b = -log of the mean predicted probability of each class).
- `constant_baseline` / `degenerate_line`: the best constant predictor on the validation split, and
  one line when the model is no better than it.
- `fit_posthoc`: all of the above for one model, with repeated half splits of the validation set
  (out-of-half gain of the tuned rule, its spread; with few labels per class the rule is the mean of
  the half-split rules, and it is only kept when its out-of-half gain is positive). Its result is
  the JSON saved as `calibration.json` in the model folder; `apply` uses it at prediction time.
  The calibration (plain T or BCTS) is chosen on the same half splits by out-of-half NLL; the
  decisions do not depend on that choice (see `fit_posthoc`).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.metrics import f1_score

from ulmfit.errors import UlmfitError

# `cfg` below: the `imbalance` section of the run's config (recipes/config.py ImbalanceConfig: ratio,
# rule, beta, decision_rule, temperature, few_per_class, repeats); only its attributes are read here.
WEIGHT_RULES = ("auto", "none", "balanced", "effective", "adjusted")
DECISION_RULES = ("bias", "prior", "none")
EPS = 1e-12


# ------------------------------------------------------------------------------------ weighting

def imbalance_ratio(labels, n_classes: int) -> float:
    """Largest over smallest class count among the classes present in `labels` (1.0: balanced)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    present = counts[counts > 0]
    return float(present.max() / present.min()) if present.size else 1.0


def weighting_rule(setting: str, labels, n_classes: int, cfg) -> str:
    """The concrete rule for a recipe's `class_weights` setting: "auto" is `cfg.rule` past `cfg.ratio`,
    else "none"; the other settings are kept."""
    if setting not in WEIGHT_RULES:
        raise UlmfitError(f"class_weights={setting!r}: choose one of {', '.join(WEIGHT_RULES)}")
    if setting != "auto":
        return setting
    return cfg.rule if imbalance_ratio(labels, n_classes) > cfg.ratio else "none"


def class_weights(labels, n_classes: int, rule: str, beta: float = 0.999) -> np.ndarray | None:
    """Per-class loss weights, scaled so that the mean weight over the training examples is 1 (the
    loss keeps its size); a class absent from training gets 0. None for rule "none"."""
    if rule in ("none", "adjusted"):  # "adjusted": no weights, the logits move instead (log_prior)
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    if rule == "balanced":
        raw = 1.0 / np.maximum(counts, 1)
    elif rule == "effective":
        raw = (1.0 - beta) / (1.0 - np.power(beta, np.maximum(counts, 1)))
    else:
        raise UlmfitError(f"class weighting rule {rule!r} is not balanced, effective or none")
    raw = np.where(counts > 0, raw, 0.0)
    return raw * counts.sum() / max(float((raw * counts).sum()), EPS)


def log_prior(labels, n_classes: int) -> np.ndarray:
    """log of each class's share of the training labels, [C] (the logit-adjusted loss's shift, rule
    "adjusted"); a class absent from training counts as one example, so its log stays finite."""
    counts = np.maximum(np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes), 1).astype(np.float64)
    return np.log(counts / counts.sum())


# ------------------------------------------------------------------------------------ calibration

def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))


def softmax(z: np.ndarray) -> np.ndarray:
    """Over the last axis (classes): [N, C], or a stack of them [G, N, C]."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def scale(probs: np.ndarray, temperature: float, shift=None) -> np.ndarray:
    """softmax(log p / T + c): the probabilities of a model whose logits are divided by T, plus a
    per-class shift c (None: no shift; BCTS, `fit_bcts`)."""
    z = _log(probs) / float(temperature)
    return softmax(z if shift is None else z + np.asarray(shift, dtype=np.float64))


def nll(probs: np.ndarray, labels) -> float:
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.mean(_log(probs)[np.arange(len(labels)), labels]))


def fit_temperature(probs: np.ndarray, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T minimising the NLL of softmax(log p / T) on (probs, labels): a bounded 1-D search on
    log T (scipy's Brent). T > 1 softens an over-confident model, T < 1 sharpens an under-confident one."""
    logp = _log(probs)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]))

    r = minimize_scalar(loss, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                        options={"xatol": 1e-4})
    return float(np.exp(r.x)) if loss(r.x) < loss(0.0) else 1.0


def fit_bcts(probs: np.ndarray, labels, bounds: tuple[float, float] = (0.05, 20.0),
             shift_bound: float = 10.0) -> tuple[float, np.ndarray]:
    """(T, c) minimising the NLL of softmax(log p / T + c) on (probs, labels), c_0 = 0 (only
    differences matter): L-BFGS-B on (log T, c_1..c_{K-1}) with the analytic gradient, started from
    the plain temperature and c = 0 (so never worse than plain T on this data); |c| <= `shift_bound`
    keeps a class absent from (probs, labels) finite."""
    logp = _log(probs)
    labels = np.asarray(labels, dtype=np.int64)
    n, k = logp.shape
    t0 = fit_temperature(probs, labels, bounds)
    if n == 0:
        return t0, np.zeros(k)
    onehot = np.eye(k)[labels]

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        t = np.exp(x[0])
        z = logp / t + np.r_[0.0, x[1:]]
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        g = (np.exp(z - lse[:, None]) - onehot) / n  # d loss / d z
        return float(np.mean(lse - z[np.arange(n), labels])), np.r_[float(np.sum(g * (-logp / t))), g.sum(0)[1:]]

    x0 = np.r_[np.log(t0), np.zeros(k - 1)]
    box = [(np.log(bounds[0]), np.log(bounds[1]))] + [(-shift_bound, shift_bound)] * (k - 1)
    r = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=box)
    if not np.all(np.isfinite(r.x)) or loss(r.x)[0] > loss(x0)[0]:
        return t0, np.zeros(k)
    return float(np.exp(r.x[0])), np.r_[0.0, r.x[1:]]


def ece(probs: np.ndarray, labels, n_bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width bins of the top probability of
    (share of examples in the bin) * |accuracy - mean confidence| (Guo et al. 2017, §2)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(float((pred[m] == labels[m]).mean()) - float(conf[m].mean()))
    return float(total)


# ------------------------------------------------------------------------------------ decision rule

def decide(probs: np.ndarray, bias) -> np.ndarray:
    """Class indices: argmax(log p + bias) (bias None or zeros: plain argmax) over the last axis, so
    a stack of probabilities [G, N, C] with biases [G, 1, C] is decided at once (the ensemble's points)."""
    if bias is None:
        return np.asarray(probs).argmax(axis=-1)
    return (_log(probs) + np.asarray(bias, dtype=np.float64)).argmax(axis=-1)


def macro_f1(labels, pred, n_classes: int) -> float:
    return float(f1_score(labels, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def macro_f1_many(labels, preds: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 (sklearn's, zero_division=0) of each row of `preds` [G, N] against `labels` [N]: [G].
    With `weights` [F, N] (a count per row: a fold's 0/1 mask, a bootstrap draw's multiplicities),
    one macro-F1 per weighting and row of `preds`: [F, G]. Counts are matrix products (exact in
    float64): the decision rule's coordinate search and the ensemble's out-of-fold weight choice
    (recipes/ensemble.py) score many candidates on many row subsets at once."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    w = np.ones((1, labels.shape[0])) if weights is None else np.asarray(weights, dtype=np.float64)
    tp, denom = np.zeros((w.shape[0], preds.shape[0], k)), np.zeros((w.shape[0], preds.shape[0], k))
    for c in range(k):
        is_c = preds == c
        tp[:, :, c] = w @ (is_c & (labels == c)).T
        denom[:, :, c] = w @ is_c.T + (w @ (labels == c))[:, None]  # (tp + fp) + (tp + fn)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-300), 0.0).mean(2)
    return f1[0] if weights is None else f1


def tune_bias(probs: np.ndarray, labels, grid: np.ndarray | None = None, rounds: int = 3) -> np.ndarray:
    """A per-class additive bias on log-probabilities maximising macro-F1 on (probs, labels), by
    coordinate search: class 0 stays at 0 (only differences matter); each round tries every grid
    value for each other class in turn, keeping the best (ties: the value closest to 0)."""
    logp = _log(probs)
    labels = np.asarray(labels, dtype=np.int64)
    k = logp.shape[1]
    grid = np.round(np.linspace(-4, 4, 81), 6) if grid is None else np.asarray(grid, dtype=np.float64)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]  # ties go to the smallest |b|
    bias = np.zeros(k)
    best = macro_f1(labels, (logp + bias).argmax(1), k)
    for _ in range(rounds):
        changed = False
        for c in range(1, k):
            trial = np.repeat(logp[None] + bias, len(grid), axis=0)  # [G, N, K]
            trial[:, :, c] = logp[None, :, c] + grid[:, None]
            scores = macro_f1_many(labels, trial.argmax(2), k)
            j = int(np.argmax(scores))  # first maximum: the smallest |b| among ties
            if scores[j] > best + 1e-12:
                best, bias[c], changed = float(scores[j]), grid[j], True
        if not changed:
            break
    return bias


def prior_bias(probs: np.ndarray) -> np.ndarray:
    """Prior correction: b_c = -log(mean predicted probability of class c), so that a class the
    model predicts rarely on average is not out-voted by its prior (centred, class 0 at 0)."""
    b = -np.log(np.clip(np.asarray(probs, dtype=np.float64).mean(axis=0), EPS, None))
    return b - b[0]


def _rule(kind: str, probs: np.ndarray, labels) -> np.ndarray:
    return tune_bias(probs, labels) if kind == "bias" else prior_bias(probs)


def half_splits(labels, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`repeats` stratified splits of range(len(labels)) into two halves (each class split in two)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        a = []
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            a.append(idx[: len(idx) // 2 + rng.integers(0, 2) * (len(idx) % 2)])
        a = np.sort(np.concatenate(a))
        out.append((a, np.setdiff1d(np.arange(len(labels)), a)))
    return out


def tuned_macro_f1(probs: np.ndarray, labels, k: int, repeats: int = 2, seed: int = 0) -> float:
    """Validation macro-F1 after the tuned decision rule (`tune_bias`), scored out of half: the mean over
    `repeats` stratified half splits of each half scored by the bias tuned on the other, the estimate
    `fit_posthoc` keeps its rule on. The selection metric `macro_f1_tuned` scores each epoch by what
    `predict` will do with it, not by its raw argmax, which a weighted or logit-adjusted loss tilts
    towards the rare classes by design. NaN without labels."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return float("nan")
    scores = [macro_f1(labels[score], decide(probs[score], tune_bias(probs[tune], labels[tune])), k)
              for a, b in half_splits(labels, repeats, seed) for tune, score in ((a, b), (b, a))]
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------ degenerate model

def constant_baseline(labels, n_classes: int) -> dict:
    """The best constant predictor on `labels`: always answering one class (the one with the highest
    macro-F1; that is also the majority class, which has the highest accuracy)."""
    labels = np.asarray(labels, dtype=np.int64)
    best = None
    for c in range(n_classes):
        pred = np.full(len(labels), c)
        m = {"class": c, "macro_f1": macro_f1(labels, pred, n_classes), "accuracy": float((labels == c).mean())}
        if best is None or (m["macro_f1"], m["accuracy"]) > (best["macro_f1"], best["accuracy"]):
            best = m
    return best


def degenerate_check(pred, labels, classes: list[str], margin: float = 0.01) -> dict:
    """Compare predictions with the best constant predictor on the same labels. "degenerate": the
    model's macro-F1 is not `margin` above the constant's, or it predicts a single class."""
    labels, pred = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    k = len(classes)
    const = constant_baseline(labels, k)
    model = {"macro_f1": macro_f1(labels, pred, k), "accuracy": float((pred == labels).mean()) if len(labels) else 0.0,
             "classes_predicted": int(len(np.unique(pred)))}
    degenerate = model["macro_f1"] <= const["macro_f1"] + margin or model["classes_predicted"] < 2
    out = {"constant": {**const, "class": classes[const["class"]]}, "model": model, "degenerate": bool(degenerate)}
    out["message"] = degenerate_line(out) if degenerate else None
    return out


def degenerate_line(check: dict) -> str:
    c, m = check["constant"], check["model"]
    return (f"warning: the model is no better than always answering {c['class']!r} on the validation split "
            f"(macro-F1 {m['macro_f1']:.4f} vs {c['macro_f1']:.4f}, accuracy {m['accuracy']:.4f} vs "
            f"{c['accuracy']:.4f}); try: a pretrained LM (--pretrained general-en), more labels or unlabelled text, "
            f"more classifier epochs (--set clf.epochs=...), --direction both, or the TF-IDF baseline")


# ------------------------------------------------------------------------------------ all together

def _choose_calibration(probs: np.ndarray, labels, splits) -> dict:
    """Plain T or BCTS: each fitted on one half of every split and scored (NLL) on the other; BCTS
    is kept when its mean out-of-half NLL is lower. Also the spread of the halves' plain temperatures
    (the report's "Temperature on the half splits"), so no half is fitted twice."""
    t_nll, b_nll, temps = [], [], []
    for a, b in splits:
        for fit_on, score in ((a, b), (b, a)):
            t = fit_temperature(probs[fit_on], labels[fit_on])
            temps.append(t)
            tb, c = fit_bcts(probs[fit_on], labels[fit_on])
            t_nll.append(nll(scale(probs[score], t), labels[score]))
            b_nll.append(nll(scale(probs[score], tb, c), labels[score]))
    t_mean, b_mean = float(np.mean(t_nll)), float(np.mean(b_nll))
    return {"chosen": "bcts" if b_mean < t_mean else "temperature", "nll_temperature": t_mean, "nll_bcts": b_mean,
            "nll_bcts_wins": int(np.sum(np.array(b_nll) < np.array(t_nll))), "n": len(t_nll),
            "temperature_spread": [float(np.min(temps)), float(np.max(temps))]}


def fit_posthoc(probs: np.ndarray, labels, classes: list[str], cfg, seed: int = 0) -> dict:
    """Calibration and decision rule for one model from its validation probabilities; the JSON of
    `calibration.json` (read back by `apply`), with the before/after figures for the report.

    The calibration is plain T or BCTS (the one with the lower out-of-half NLL). The decisions do not
    depend on it: the rule r is tuned on softmax(log p / T) (plain T) and decides argmax(log p / T + r);
    with BCTS the handed-out probabilities are p_B = softmax(log p / T_B + c), and the saved `bias`
    b = r T / T_B - c gives argmax(log p_B + b) = argmax((log p / T + r) T / T_B): the same labels
    (b = -c when no rule is kept: the model's argmax)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = len(classes)
    t = fit_temperature(probs, labels) if cfg.temperature else 1.0
    cal = scale(probs, t)  # the decisions are tuned and taken on these (module docstring)
    counts = np.bincount(labels, minlength=k)
    few = bool(counts.min() < cfg.few_per_class)
    splits = half_splits(labels, cfg.repeats, seed) if len(labels) else []
    choice = _choose_calibration(probs, labels, splits) if cfg.temperature and splits else None
    t_out, shift = t, None
    if choice is not None and choice["chosen"] == "bcts":
        t_out, c = fit_bcts(probs, labels)
        shift = [float(x) for x in c]
    handed = scale(probs, t_out, shift)
    out = {"format": 1, "temperature": t_out, "calibration": "bcts" if shift else "temperature",
           "calibration_bias": shift, "decision_rule": "none", "bias": None,
           "valid": {"n": int(len(labels)), "counts": {c: int(n) for c, n in zip(classes, counts)},
                     "nll_before": nll(probs, labels), "nll_after": nll(handed, labels),
                     "ece_before": ece(probs, labels), "ece_after": ece(handed, labels),
                     "nll_temperature": nll(cal, labels), "ece_temperature": ece(cal, labels),
                     "macro_f1_argmax": macro_f1(labels, cal.argmax(1), k)},
           "few_labels": few}
    if choice is not None:
        out["calibration_selection"] = {**choice, "plain_temperature": t,
                                        "how": f"{cfg.repeats} stratified half splits of the validation set, each half "
                                               f"fitting and the other scoring (mean NLL)"}
    if cfg.decision_rule != "none" and len(labels):
        gains, rules = [], []
        for a, b in splits:
            for tune, score in ((a, b), (b, a)):
                r = _rule(cfg.decision_rule, cal[tune], labels[tune])
                rules.append(r)
                gains.append(macro_f1(labels[score], decide(cal[score], r), k)
                             - macro_f1(labels[score], cal[score].argmax(1), k))
        bias = np.mean(rules, axis=0) if few else _rule(cfg.decision_rule, cal, labels)
        gain = float(np.mean(gains))
        out["selection"] = {"how": f"{cfg.repeats} stratified half splits of the validation set, each half tuning "
                                   f"and the other scoring" + ("; the rule is the mean of the half-split rules "
                                                               "(few labels)" if few else ""),
                            "gain_mean": gain, "gain_sd": float(np.std(gains)), "gain_min": float(np.min(gains)),
                            "gain_max": float(np.max(gains)),
                            "temperature_spread": choice["temperature_spread"] if choice else None}
        if gain > 0:
            out["decision_rule"], out["bias"] = cfg.decision_rule, [float(x) for x in bias]
        out["valid"]["macro_f1_rule"] = macro_f1(labels, decide(cal, out["bias"]), k)
    else:
        out["valid"]["macro_f1_rule"] = out["valid"]["macro_f1_argmax"]
    if shift is not None:  # the same decisions on the handed-out probabilities (docstring)
        out["tuned_bias"] = out["bias"]
        out["bias"] = handed_bias(out["bias"], t, t_out, shift, k)
    return out


def handed_bias(rule, t_rule: float, t_out: float, shift, k: int) -> list[float] | None:
    """The bias that decides on the handed-out probabilities softmax(log p / t_out + shift) exactly as
    the rule `rule` decides on softmax(log p / t_rule): argmax(log p / t_rule + r) = argmax(log p / t_out
    + r t_rule / t_out), so b = r t_rule / t_out - shift (None: no rule, no shift, the argmax)."""
    if rule is None and shift is None:
        return None
    r = np.zeros(k) if rule is None else np.asarray(rule, dtype=np.float64)
    return [float(x) for x in r * t_rule / t_out - (0.0 if shift is None else np.asarray(shift, dtype=np.float64))]


def apply(probs: np.ndarray, calibration: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated probabilities, predicted class indices) of raw model probabilities under a saved
    `fit_posthoc` result (None: the probabilities as they are and their argmax)."""
    probs = np.asarray(probs, dtype=np.float64)
    if not calibration:
        return probs.astype(np.float32), probs.argmax(1)
    cal = scale(probs, calibration.get("temperature", 1.0), calibration.get("calibration_bias")).astype(np.float32)
    # decided on the float32 probabilities handed out, so that anyone deciding from them (the server,
    # `predict --workers`: `decide(probs, calibration["bias"])`) gets the very same labels
    return cal, decide(cal, calibration.get("bias"))


def calibration_line(post: dict, classes: list[str]) -> str:
    """The report's line on the calibration of a `fit_posthoc` result: which one, and the validation
    ECE and NLL before -> after."""
    v = post["valid"]
    after = (f"expected calibration error on validation {v['ece_before']:.4f} -> {v['ece_after']:.4f} "
             f"(NLL {v['nll_before']:.4f} -> {v['nll_after']:.4f})")
    cs = post.get("calibration_selection")
    vs = (f"out-of-half NLL {cs['nll_bcts']:.4f} vs {cs['nll_temperature']:.4f} for plain T (difference "
          f"{cs['nll_bcts'] - cs['nll_temperature']:+.5f}; lower in "
          f"{cs['nll_bcts_wins']} of {cs['n']}; {cs['how']})") if cs else ""
    if post.get("calibration_bias"):
        c = ", ".join(f"{k} {x:+.2f}" for k, x in zip(classes, post["calibration_bias"]))
        return (f"Bias-corrected temperature scaling (softmax(log p / T + c)): T = {post['temperature']:.3f}, c = {c}; "
                f"{after}; chosen over plain temperature scaling (T = {cs['plain_temperature']:.3f}, validation ECE "
                f"{v['ece_temperature']:.4f}, NLL {v['nll_temperature']:.4f}) by {vs}.")
    return (f"Temperature scaling: T = {post['temperature']:.3f}; {after}"
            + (f"; bias-corrected temperature scaling not kept: {vs}." if cs else "."))


def summary_lines(post: dict, classes: list[str]) -> list[str]:
    """The report's lines on calibration and the decision rule."""
    lines, v = [calibration_line(post, classes)], post["valid"]
    bcts = bool(post.get("calibration_bias"))
    shifted = " of the temperature-scaled probabilities, the model's own (saved as bias = -c on the handed-out ones)" \
        if bcts else ""
    sel = post.get("selection")
    if sel is None:
        lines.append(f"Decision rule: argmax{shifted} (tuning switched off: imbalance.decision_rule=none).")
        return lines
    spread = (f"out-of-half macro-F1 gain {sel['gain_mean']:+.4f} (sd {sel['gain_sd']:.4f}, "
              f"min {sel['gain_min']:+.4f}, max {sel['gain_max']:+.4f}; {sel['how']})")
    if post["decision_rule"] == "none":
        lines.append(f"Decision rule: argmax{shifted}; the tuned rule was not kept, its {spread} is not positive.")
    else:
        tuned = post.get("tuned_bias") or post["bias"]
        b = ", ".join(f"{c} {x:+.2f}" for c, x in zip(classes, tuned))
        shifted = (" (saved as bias = r T / T_B - c on the handed-out probabilities: the same labels, whatever the "
                   "calibration)") if bcts else ""
        lines.append(f"Decision rule: {post['decision_rule']} on temperature-scaled log-probabilities ({b}){shifted}; "
                     f"validation macro-F1 {v['macro_f1_argmax']:.4f} -> {v['macro_f1_rule']:.4f} (tuned on this split: "
                     f"optimistic); {spread}.")
    if sel.get("temperature_spread"):
        lo, hi = sel["temperature_spread"]
        lines.append(f"Temperature on the half splits: {lo:.3f} .. {hi:.3f}.")
    return lines
