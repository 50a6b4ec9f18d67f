"""Configuration fields defined once: type, range, allowed values and meaning, checked at the door.

Every config dataclass (recipes/config.py, ulmfit_config.py, siatl_config.py, transformer_config.py,
pretrain_config.py) declares
its fields with `spec(default, ...)` or with one of the shared fields below, and calls
`check(self, section)` in `__post_init__` (setfit's `TrainingArguments` shape). So a value is
checked for its type (from the annotation), range and choices whenever a config is built: CLI
flags, `--set`, `--config` files and the Python API alike, before any data is read. A bad value is
one `UlmfitError` line naming the field, the value and what is allowed.

A field shared by several sections (the classifier's and SiATL's `bs`, `metric`, `patience`, ...)
is one function here: its type, range and meaning are written once; each section passes only its
own default. This module imports no torch, so the checks take milliseconds.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, field, fields
from typing import Any, Literal

from ulmfit.errors import UlmfitError
from ulmfit.models.presets import PRESETS
from ulmfit.train.precision import PRECISIONS  # auto | fp32 | bf16 (torch imported only when resolving)
from ulmfit.train.schedules import SCHEDULE_KINDS

METRICS = ("macro_f1", "macro_f1_tuned", "accuracy", "weighted_f1", "valid_loss")  # model selection (train/tasks.py score_probs computes them)
SOFTMAXES = ("full", "adaptive")  # = models/awd_lstm.py SOFTMAXES (not imported: no torch at the door)
LM_METRICS = ("valid_loss", "accuracy")  # language-model selection (train/tasks.py LMTask.evaluate computes them)
OPTIMIZERS = ("adamw", "adam", "sgd")  # train/optim.py make_optimizer
CLASS_WEIGHTS = ("auto", "none", "balanced", "effective", "adjusted")  # = train/calibration.py WEIGHT_RULES (not imported: no sklearn at the door)
AUTO = "auto"  # a value the configuration resolves per run (recipes/config.py FitConfig.resolved)


def spec(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None, lt: float | None = None,
         le: float | None = None, choices: tuple | None = None, factory: Any = MISSING):
    """A dataclass field with its checks: `ge`/`gt`/`le`/`lt` bounds (on each item of a tuple),
    `choices` (allowed values; "auto" must be listed where a field takes it)."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, lt=lt, le=le, choices=choices).items() if v is not None}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- shared fields (one definition each)
def drop_mult(default: float):
    """Scales every dropout of the AWD-LSTM (fastai's drop_mult); 0 turns them off."""
    return spec(default, ge=0)


def batch_size(default: int):
    return spec(default, ge=1)


def metric(default: str = "macro_f1"):
    """The validation metric that selects the best epoch and drives early stopping."""
    return spec(default, choices=METRICS)


def lm_metric(default: str = "accuracy"):
    """The AWD-LSTM language model's validation metric that selects the LM epoch the classifier
    starts from and drives the LM phase's early stopping (`finetune_lm`): accuracy (next-word) or
    valid_loss (cross-entropy, i.e. perplexity). The evidence for the default: docs/GUIDE.md,
    "Stopping LM fine-tuning" (benchmarks/lm_stopping.py)."""
    return spec(default, choices=LM_METRICS)


def lm_softmax(default: str):
    """The AWD-LSTM language model's output layer: full (a softmax over the whole vocabulary) or
    adaptive (models/adaptive_softmax.py: a tied adaptive softmax, Grave et al. 2017; the word rows
    stay the embedding's, so vocabulary transfer and the classifier are unchanged, and perplexity
    is exact). An LM pretrained with either head loads into either: full -> adaptive derives the
    cluster logits from the words' rows (projections at identity; on the tweets' fine-tuned LM,
    perplexity 55.4 -> 55.9 before any training), adaptive -> full keeps rows and biases and drops
    the cluster parameters (56.1 -> 60.4: approximate, logged). Each section's default carries its
    measured reason (docs/BENCHMARKS.md, "Adaptive softmax in pretraining and LM fine-tuning")."""
    return spec(default, choices=SOFTMAXES)


def softmax_cutoffs(default: tuple[int, ...] = (2000, 10000)):
    """Adaptive softmax: word ranks (the vocabulary is sorted by frequency) where the head ends and
    each tail cluster starts, strictly increasing; cutoffs at or past the vocabulary's size are
    dropped, so one setting fits any vocabulary (one of at most cutoffs[0] words is a full softmax).
    2000, 10000: a 2,000-word head holds ~80-90 % of the running tokens of English text (Grave et al.
    2017 §5 use 2k-4k heads for 10k-800k vocabularies), so only the rest pay for a tail."""
    return spec(default, ge=1)


def check_cutoffs(obj: Any, section: str) -> None:
    """`cutoffs` strictly increasing (the clusters are the ranges between them)."""
    if list(obj.cutoffs) != sorted(set(obj.cutoffs)):
        fail(section, "cutoffs", list(obj.cutoffs), "the word ranks must increase strictly, e.g. [2000, 10000]")


def patience(default: int | None):
    """Epochs without a better `metric` before stopping; None never stops early."""
    return spec(default, ge=1)


def min_steps_per_epoch(default: int = 50):
    """With few labels an epoch is a handful of steps; each training epoch then repeats the
    reshuffled data until it has at least this many (0: one pass)."""
    return spec(default, ge=0)


def max_doc_tokens(default: int | None):
    """Read at most the first this-many tokens of each document (None: all). Was `max_tokens`
    (classifier) and `max_len` (SiATL) in config files before issue 14."""
    return spec(default, ge=1)


def max_train_tokens(default: int | None = None):
    """Train the language model on at most this many tokens of text, a seeded sample of whole
    documents (None: all). Was `max_tokens` before issue 14."""
    return spec(default, ge=1)


def learning_rate(default: float | None):
    return spec(default, gt=0)


def weight_decay(default: float):
    return spec(default, ge=0)


def schedule(default: str = "one_cycle"):
    return spec(default, choices=SCHEDULE_KINDS)


def preset(default: str = "small"):
    """Model size when no pretrained LM is given (models/presets.py)."""
    return spec(default, choices=tuple(PRESETS))


def bptt(default: int):
    return spec(default, ge=1)


def precision(default: str = "auto"):
    """auto, fp32, or bf16 autocast. auto: bf16 where the hardware computes bf16 natively (AMX or
    AVX512-BF16 CPUs, bf16 GPUs), else fp32 (train/precision.py); resolved once per run and saved."""
    return spec(default, choices=PRECISIONS)


def seed(default: int = 0):
    return spec(default, ge=0)


# ---------------------------------------------------------------- classifier sections (clf, transformer, siatl)
def stage_lrs(default: tuple[float, ...] | None):
    """Gradual unfreezing (ULMFiT §3.3): the top group's learning rate of each stage."""
    return spec(default, gt=0)


def stage_epochs(default: tuple[int, ...]):
    """Gradual unfreezing: the epochs of each stage (head, -2, -3, all), one per rate of `lrs`."""
    return spec(default, ge=0)


def lr_factor(default: float):
    """Discriminative fine-tuning (ULMFiT §3.2): each layer group below the top trains at the rate of the
    group above it divided by this factor (the paper's 2.6)."""
    return spec(default, gt=0)


def lin_sizes(default: tuple[int, ...] = (50,)):
    """Hidden sizes of the classifier head's linear blocks (ULMFiT §3.3)."""
    return spec(default, ge=1)


def class_weights(default: str = "auto"):
    """Per-class weights of the classification loss: auto (imbalance.rule when the classes differ by
    more than imbalance.ratio, else none; fit records the rule used in config.json), none, balanced
    (inverse frequency), effective (effective number of samples, Cui et al. 2019) or adjusted (no weights:
    the logit-adjusted loss, Menon et al. 2021, train/tasks.py ClassLoss). Issue 21:
    unweighted, a 5% class was never predicted and SiATL answered the majority class."""
    return spec(default, choices=CLASS_WEIGHTS)


CV_SETTINGS = ("auto", "on", "off")  # = train/crossval.py SETTINGS (not imported: no sklearn at the door)


def cv(default: str = "auto"):
    """Cross-validated selection for small label sets (train/crossval.py): the labelled rows
    (training and validation pooled) split into `cv_folds` stratified folds, one classifier per fold
    through the same loop, the epoch chosen on the mean of the folds' validation curves, then a refit
    on all rows for that many epochs; temperature and decision rule fitted on the out-of-fold
    probabilities. on, off, or auto: on when the validation split has fewer than `cv_below` examples
    of some class (fit records the value used in config.json). Costs `cv_folds` more classifier fits
    (the language model is fine-tuned once)."""
    return spec(default, choices=CV_SETTINGS)


def cv_folds(default: int = 5):
    """The folds of cross-validated selection (fewer when the rarest class has fewer rows). 5: each
    fold trains on 80% of the rows, and the cost (5 more classifier fits) stays a few minutes at the
    few hundred labels where selection needs it; 10 would train on 90% at twice the cost."""
    return spec(default, ge=2)


def cv_below(default: int = 30):
    """`cv: auto` cross-validates when some class has fewer than this many validation examples. 30:
    one example then moves that class's F1 by more than ~0.03, as much as the gap between the best
    epochs of a run, so a single split's choice is noise (a 10% hold-out of 500 labels has 2-3 rows
    of a 5% class); at 30 and above the split itself is kept (cross-validating costs k more fits)."""
    return spec(default, ge=0)


def clip(default: float | None = 1.0):
    """Gradient-norm clipping; None: none."""
    return spec(default, gt=0)


def gamma_start(default: float = 0.2):
    """SiATL's auxiliary LM-loss weight at epoch 1 (train/siatl_schedule.py gamma_at)."""
    return spec(default, ge=0)


def gamma_end(default: float = 0.1):
    """The LM-loss weight at epoch `gamma_epochs` and after; both 0 turns the LM loss off."""
    return spec(default, ge=0)


def gamma_epochs(default: int = 15):
    """Epochs over which gamma decays (geometrically) from gamma_start to gamma_end."""
    return spec(default, ge=1)


# ---------------------------------------------------------------- checking
def check(obj: Any, section: str) -> None:
    """Check every field of dataclass `obj` against its annotation and spec; tuples given as lists
    (JSON) become tuples. Raises one UlmfitError line: section.field=value and what is allowed."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list) and _allows(hints[f.name], tuple):
            value = tuple(value)
            object.__setattr__(obj, f.name, value)
        problem = _problem(value, hints[f.name], f.metadata)
        if problem:
            raise UlmfitError(f"{section}.{f.name}={value!r}: {problem}")


def fail(section: str, name: str, value: Any, what: str) -> None:
    """One line for a rule between fields (`check` covers each field alone)."""
    raise UlmfitError(f"{section}.{name}={value!r}: {what}")


def check_gamma(obj: Any, section: str) -> None:
    """gamma_start and gamma_end both > 0 (the exponential decay), or both 0 (no LM loss)."""
    if (obj.gamma_start > 0) != (obj.gamma_end > 0):
        fail(section, "gamma_end", obj.gamma_end, "the exponential decay needs gamma_start and gamma_end both > 0, "
                                                  "or both 0 to turn the LM loss off")


def _alternatives(tp) -> tuple:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _allows(tp, kind) -> bool:
    return any(a is kind or typing.get_origin(a) is kind for a in _alternatives(tp))


def _problem(value: Any, tp, meta) -> str | None:
    for alt in _alternatives(tp):
        if _matches(value, alt):
            if isinstance(value, str) and meta.get("choices") and value not in meta["choices"]:
                return f"choose one of {', '.join(map(str, meta['choices']))}"
            if typing.get_origin(alt) is Literal or value is None or isinstance(value, (str, bool)):
                return None
            bad = next((v for v in (value if isinstance(value, tuple) else (value,)) if _out_of_range(v, meta)), None)
            return None if bad is None else f"{'each value ' if isinstance(value, tuple) else ''}must be {_range(meta)}"
    return f"expected {_describe(tp, meta)}"


def _matches(value: Any, tp) -> bool:
    if tp is type(None):
        return value is None
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return isinstance(value, tuple) and len(value) > 0 and all(_matches(v, item) for v in value)
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _out_of_range(v, meta) -> bool:
    return (("ge" in meta and v < meta["ge"]) or ("gt" in meta and v <= meta["gt"])
            or ("le" in meta and v > meta["le"]) or ("lt" in meta and v >= meta["lt"]))


def _range(meta) -> str:
    parts = [f"{op} {meta[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in meta]
    return " and ".join(parts)


def _describe(tp, meta) -> str:
    names = []
    for alt in _alternatives(tp):
        if alt is type(None):
            names.append("null")
        elif typing.get_origin(alt) is Literal:
            names.append(" or ".join(repr(a) for a in typing.get_args(alt)))
        elif typing.get_origin(alt) in (tuple, list):
            item = typing.get_args(alt)[0]
            plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}.get(item, str(item))
            names.append(f"a {'non-empty ' if typing.get_origin(alt) is tuple else ''}list of {plural}")
        elif alt is str and meta.get("choices"):
            names.append("one of " + ", ".join(map(str, meta["choices"])))
        else:
            names.append({int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(alt, str(alt)))
    text = " or ".join(names)
    rng = _range(meta)
    return f"{text} {rng}" if rng else text
