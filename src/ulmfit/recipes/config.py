"""The run's configuration, saved as `config.json` in every model folder: the shared sections
(`data`, `lm`, `imbalance`, the run-wide fields) here, each recipe's own section where the recipe registers
(recipes/registry.py: `clf` in ulmfit_config.py, `siatl` in siatl_config.py).

Every field is declared once with its checks (recipes/fields.py) and checked when the config is
built: CLI flags, `--set`, `--config` files and the Python API alike, before any data is read.
Defaults come from the ULMFiT paper (Howard & Ruder 2018) and fastai's text defaults, sized down
where a 2-core CPU needs it (the `small` preset); each field says where it comes from. Fields that
were renamed stay loadable under their old names (`RENAMED` of each section). Fields added since a
run was saved take, when that run resumes, the value that reproduces it (`BEFORE` of each section):
a resumed run equals the one that was interrupted, whichever version saved it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from ulmfit.errors import UlmfitError
from ulmfit.recipes import few_labels
from ulmfit.recipes import fields as F
from ulmfit.recipes import registry
from ulmfit.train.device import training_device
from ulmfit.train.precision import training_precision

DIRECTIONS = ("fwd", "bwd", "both")
PARALLEL_SETTINGS = ("auto", "on", "off")  # parallel_directions


@dataclass
class DataConfig:
    train: str | None = None  # paths, recorded so a run can be repeated from its folder
    valid: str | None = None
    unlabeled: list[str] = F.spec(factory=list)
    text_col: str = "text"
    label_col: str = "label"
    encoding: str = "utf-8"
    valid_frac: float = F.spec(0.1, gt=0, lt=1)  # held out (stratified) from train when no validation file is given
    # Low-resource mode (at most one of the two): train the classifier on a stratified, seeded sample
    # of the training rows; the other rows' texts join the language model's unlabelled text.
    labels_per_class: int | None = F.spec(None, ge=1)
    max_labels: int | None = F.spec(None, ge=1)  # in proportion to the class frequencies, at least one per class

    def __post_init__(self) -> None:
        F.check(self, "data")
        if self.labels_per_class is not None and self.max_labels is not None:
            F.fail("data", "max_labels", self.max_labels, "set at most one of labels_per_class and max_labels")


@dataclass
class LMTrainConfig:
    """Language-model fine-tuning (ULMFiT §3.2), or training from scratch without a pretrained LM."""

    preset: str = F.preset("small")  # model size when not starting from a pretrained LM (models/presets.py)
    drop_mult: float = F.drop_mult(0.3)  # fastai's book uses 0.3 for LM fine-tuning
    bs: int = F.batch_size(32)  # more, smaller steps: on small target corpora the step count is what runs short
    bptt: int = F.bptt(70)
    variable_bptt: bool = True  # Merity et al. §4.1
    epochs: int = F.spec(4, ge=0)
    # Rate of the top group in the unfrozen epochs. None: 3e-3 when fine-tuning a pretrained LM
    # (fastai's book uses 2e-3..1e-2), 2e-2 when training from scratch (measured on the tweets: at
    # 5e-3 a from-scratch LM was still at unigram level after 2 epochs).
    lr: float | None = F.learning_rate(None)
    frozen_epochs: int = F.spec(1, ge=0)  # with a pretrained LM: first train only the embeddings (new words), fastai-style
    frozen_lr: float = F.learning_rate(1e-2)
    wd: float = F.weight_decay(0.1)
    schedule: str = F.schedule()  # or "stlr" (ULMFiT §3.2)
    min_freq: int = F.spec(3, ge=1)  # fastai's default
    # A word the pretrained LM already has is kept from this many occurrences in your text (its row
    # starts from the pretrained embedding; a new word's from their mean): a floor below min_freq for
    # those words (above it, nothing changes). None: min_freq, like any word. Measured on a distilled
    # student only (docs/BENCHMARKS.md, issue 17's "Twenty-sixth session"), hence off.
    known_min_freq: int | None = F.spec(None, ge=1)
    max_vocab: int = F.spec(30000, ge=10)
    max_train_tokens: int | None = F.max_train_tokens()
    valid_frac: float = F.spec(0.05, gt=0, lt=1)  # documents held out for perplexity and early stopping
    patience: int | None = F.patience(2)
    # Which LM epoch is kept, and what early stopping watches (docs/GUIDE.md, "Stopping LM
    # fine-tuning"): on the tweets, with validation loss rising while accuracy still improved, the
    # two rules gave classifiers within noise (500 labels, 3 seeds: +0.1 points for accuracy), and
    # training on past the loss minimum was never worse (last epoch +0.9): accuracy stops later.
    metric: str = F.lm_metric("accuracy")
    alpha: float = F.spec(2.0, ge=0)  # AR
    beta: float = F.spec(1.0, ge=0)  # TAR
    # The output layer (models/adaptive_softmax.py). adaptive: fine-tuning general-en on the tweets
    # (300k tokens, 1 frozen + 4 epochs, bf16, one thread; docs/BENCHMARKS.md, "Adaptive softmax")
    # reached the full softmax's perplexity in 1.5-1.67x less CPU time (two runs; 61.8 after 81 vs 136 CPU s),
    # 1.6x less CPU per epoch, the same next-word accuracy (0.294) and perplexity within 2 % after
    # the same epochs; classifiers from the two LMs: 0.5813 vs 0.5778 test macro-F1 (500 labels, 8
    # paired seeds, within noise). A full-softmax pretrained LM (the shipped general-en) is converted.
    softmax: str = F.lm_softmax("adaptive")
    cutoffs: tuple[int, ...] = F.softmax_cutoffs()

    RENAMED: ClassVar[dict] = {"max_tokens": "max_train_tokens"}  # old config.json names
    BEFORE: ClassVar[dict] = {"softmax": "full"}  # a saved run that predates the field: its value then

    def __post_init__(self) -> None:
        F.check(self, "lm")
        F.check_cutoffs(self, "lm")


# Fine-tuning rates by the size of the starting LM. fastai's (LM 3e-3; classifier 2e-2, 1e-2, 5e-3,
# 1e-3) suit the paper-size models (WT103, hidden 1150/1152). A small LM (hidden 256), pretrained or
# not, needs the higher from-scratch rates: general-en with fastai's rates lost 5 points of macro-F1
# on the tweets (docs/BENCHMARKS.md, "Pretraining").
LARGE_HIDDEN = 1000


def _hidden_size(lm_folder: Path) -> int:
    try:
        return int(json.loads((Path(lm_folder) / "lm_config.json").read_text())["hidden_size"])
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return LARGE_HIDDEN


@dataclass
class ImbalanceConfig:
    """Class weighting, decision rule and calibration for every recipe (issue 21; the arithmetic is
    train/calibration.py, the hooks recipes/posthoc.py). Each recipe section's `class_weights` says
    whether its loss is weighted; the rest is here, once."""

    # A recipe's class_weights "auto" weights the loss when the largest class has more than `ratio`
    # times the training examples of the smallest. 3.0, measured (docs/BENCHMARKS.md, issue 21 and the
    # demo): on the tweets' 43/39/18 split (2.3x, all labels, fwd+bwd, seed 0) weighting cost 0.6 points
    # of test macro-F1 (0.7350 vs 0.7409) and 1.7 of the forward model's validation macro-F1; on the
    # founding user's 40/55/5 (11x) it gained 0.5 at 500 labels (3-seed median) and 3.2 points of the 5%
    # class's F1 with all labels. 1.5 (the first default) weighted the mildly imbalanced case too.
    ratio: float = F.spec(3.0, ge=1)
    # The rule "auto" applies past the ratio: "balanced" (inverse frequency) or "effective" (Cui et
    # al. 2019). Quick measurement on the 40/55/5 tweets, TF-IDF + logistic regression, seed 0, test
    # macro-F1 none / balanced / effective: 500 labels 0.478 / 0.506 / 0.503, 2,000 0.560 / 0.595 /
    # 0.585, all 0.650 / 0.666 / 0.662 (docs/BENCHMARKS.md, "Imbalanced classes"): balanced.
    rule: str = F.spec("balanced", choices=("balanced", "effective", "adjusted"))
    beta: float = F.spec(0.999, gt=0, lt=1)  # effective number (Cui et al. §4 use 0.9..0.9999); 0.999 ~ inverse frequency below ~300 per class
    # The decision rule tuned on the validation split: "bias" (per-class bias on log-probabilities,
    # coordinate search on macro-F1), "prior" (prior correction) or "none" (argmax). Kept only if its
    # gain on held-out halves of the validation split is positive.
    decision_rule: str = F.spec("bias", choices=("bias", "prior", "none"))
    temperature: bool = True  # temperature scaling of the probabilities (Guo et al. 2017)
    # With fewer validation examples than this in some class, one tuning is noise: the decision rule is
    # the mean of the rules tuned on `repeats` stratified half splits (bagged), and the report gives the
    # spread of its held-out gain. 50: the F1 of a class with 25 examples moves by ~0.04 per example.
    few_per_class: int = F.spec(50, ge=0)
    repeats: int = F.spec(10, ge=1)  # stratified half splits of the validation set (each half tunes, the other scores)

    def __post_init__(self) -> None:
        F.check(self, "imbalance")


CORE_SECTIONS = {"data": DataConfig, "lm": LMTrainConfig, "imbalance": ImbalanceConfig}


@dataclass(init=False)
class FitConfig:
    """The whole run: the shared sections, the run-wide fields, and one section per registered
    recipe (`cfg.clf`, `cfg.siatl`, ...: attributes backed by `sections`; `FitConfig(clf=...)` works).
    Saved flat: {"data": ..., "lm": ..., "clf": ..., "siatl": ..., "recipe": ..., ...}."""

    data: DataConfig = field(default_factory=DataConfig)
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)  # weighting rule, decision rule, calibration
    # A registered recipe (recipes/registry.py), or "auto": chosen from the training texts by `fit` when
    # nothing else chooses the model (recipes/auto_backbone.py: MiniLM for short texts when the
    # transformers extra is installed, else the AWD-LSTM ulmfit recipe; its docstring has the evidence).
    recipe: str = registry.AUTO
    # Set by `fit` when it chose the recipe ("auto"): the rule's reason and figures, named in report.md;
    # None when the run's config or flags chose it. Saved, so a resumed run reports it too.
    auto_choice: str | None = None
    # With few labels and unlabelled text, also distil the model into a fast AWD-LSTM student over that
    # text and keep the validated ensemble of the two (recipes/few_labels.py has the rule and the
    # evidence: on the 40/55/5 tweets at 500 labels +1.8 macro-F1 and +3.0 on the 5% class, 5-seed
    # medians, for about 4x the training time). auto: when the run trains the transformer recipe with at
    # most few_labels.FEW_LABELS labelled rows and has unlabelled text; on: whenever it has unlabelled
    # text; off: the model alone. Saved resolved (on/off).
    student: str = F.spec("auto", choices=few_labels.SETTINGS)
    # "auto": the shipped general-en LM when installed, else from scratch; a shipped name; a
    # language-model folder; or None / "none" to train the LM from scratch on your text.
    pretrained: str | None = "auto"
    # fwd | bwd | both. A backward model reads every document from its last token to its first;
    # "both" trains a forward and a backward model and averages their probabilities (ULMFiT §4).
    direction: str = F.spec("fwd", choices=DIRECTIONS)
    # The backward LM of a "both" run (the forward one is `pretrained`; with direction "bwd" alone,
    # `pretrained` is the backward LM). "auto": the shipped general-en-bwd when installed, else scratch.
    pretrained_bwd: str | None = "auto"
    # A "both" run trains its two models at the same time, each in its own process with half of
    # torch's threads (recipes/ulmfit.py `parallel_plan`, train/processes.py): on, off, or auto: on
    # when both models are still to train, torch has at least 2 threads and the run is not under
    # torchrun (its ranks already share the cores). Each model's results equal a one-after-the-other
    # run with the same threads per model. auto, because a small AWD-LSTM's step scales poorly across
    # threads: the LM step on 2 AMD EPYC cores ran ~17.6k tokens/s on one thread and 21-28k on two, so
    # two one-thread processes do the same work ~1.3-1.5x sooner. Decided at run time (not saved resolved).
    parallel_directions: str = F.spec("auto", choices=PARALLEL_SETTINGS)
    optimizer: str = F.spec("adamw", choices=F.OPTIMIZERS)
    precision: str = F.precision()
    seed: int = F.seed()
    sections: dict = field(default_factory=dict)  # {section name: its config} of every registered recipe

    BEFORE: ClassVar[dict] = {"student": "off"}  # a saved run that predates the field: its value then

    def __init__(self, **kw: Any) -> None:
        own = {f.name: f for f in fields(self)}
        secs = registry.sections()
        given = dict(kw.pop("sections", None) or {})
        for name in list(kw):
            if name in secs:
                given[name] = kw.pop(name)
        given = {k: _build(secs[k], v, k) if isinstance(v, dict) and k in secs else v for k, v in given.items()}
        unknown = set(kw) - set(own)
        if unknown:
            raise UlmfitError(f"config has unknown field(s) {sorted(unknown)}; allowed: "
                              f"{sorted(set(own) - {'sections'} | set(secs))}")
        for name, f in own.items():
            if name != "sections":
                object.__setattr__(self, name, kw[name] if name in kw else
                                   f.default_factory() if callable(f.default_factory) else f.default)
        object.__setattr__(self, "sections", {name: given.get(name) or cls() for name, cls in secs.items()})
        self.__post_init__()

    def __post_init__(self) -> None:
        F.check(self, "fit")
        if self.recipe != registry.AUTO:
            registry.get(self.recipe)  # a registered recipe, or one line naming the registered ones
        for name, cls in {**CORE_SECTIONS, **registry.sections()}.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                F.fail("fit", name, value, f"expected a {cls.__name__}")

    def __getattr__(self, name: str):  # only for names that are not plain attributes: recipe sections
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"FitConfig has no field or recipe section {name!r}")

    def __setattr__(self, name: str, value) -> None:
        """`cfg.seed = 3`, `cfg.clf = replace(cfg.clf, ...)`: checked like the constructor's values."""
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            old, sections[name] = sections[name], value
        else:
            old = self.__dict__.get(name)
            object.__setattr__(self, name, value)
        try:
            self.__post_init__()
        except UlmfitError:
            self.__setattr_raw(name, old)
            raise

    def __setattr_raw(self, name: str, value) -> None:
        if name in self.__dict__["sections"]:
            self.__dict__["sections"][name] = value
        else:
            object.__setattr__(self, name, value)

    def __eq__(self, other) -> bool:
        return isinstance(other, FitConfig) and self.to_dict() == other.to_dict()

    @property
    def directions(self) -> list[str]:
        """The models this run trains, in order: ["fwd"], ["bwd"] or ["fwd", "bwd"]."""
        if self.direction not in DIRECTIONS:
            raise UlmfitError(f"direction (--direction) must be one of {list(DIRECTIONS)}, not {self.direction!r}")
        return ["fwd", "bwd"] if self.direction == "both" else [self.direction]

    @property
    def recipe_section(self):
        """The section of this run's recipe (its `metric` selects the model)."""
        return getattr(self, registry.get(self.recipe).section)

    def pretrained_for(self, direction: str) -> str | None:
        """The pretrained-LM setting of the `direction` model of this run."""
        if self.direction == "both" and direction == "bwd":
            # "auto" follows --pretrained: with no pretrained forward LM the backward one starts from scratch too
            scratch = self.pretrained is None or str(self.pretrained).lower() == "none"  # --pretrained none
            return None if self.pretrained_bwd == "auto" and scratch else self.pretrained_bwd
        return self.pretrained

    def resolved(self, direction: str | None = None) -> "FitConfig":
        """A copy with every `None`/"auto" value resolved for the `direction` model (default: the
        first one this run trains): fine-tuning values with a pretrained LM, else from-scratch ones.
        The LM's rate here; each recipe's section by its registered `resolve`."""
        from ulmfit.recipes.model_dir import resolve_pretrained

        direction = direction or self.directions[0]
        flag = "--pretrained-bwd" if self.direction == "both" and direction == "bwd" else "--pretrained"
        pretrained = resolve_pretrained(self.pretrained_for(direction), direction, flag=flag)
        large = pretrained is not None and _hidden_size(pretrained) >= LARGE_HIDDEN
        lm_lr = self.lm.lr if self.lm.lr is not None else (3e-3 if large else 2e-2)
        sections = {r.section: r.resolve(getattr(self, r.section), pretrained, large) if r.resolve
                    else getattr(self, r.section) for r in registry.recipes().values()}
        out = FitConfig.from_dict(self.to_dict())
        out.lm = replace(self.lm, lr=lm_lr)
        out.sections = sections
        recipe = registry.recipes().get(self.recipe)  # None while "auto" has not chosen: checked as an LSTM
        out.precision = training_precision(self.precision, training_device().type, lstm=recipe is None or recipe.lstm)
        return out

    def to_dict(self) -> dict:
        d = {f.name: asdict(getattr(self, f.name)) if is_dataclass(getattr(self, f.name)) else getattr(self, f.name)
             for f in fields(self) if f.name != "sections"}
        return {**d, **{name: asdict(value) for name, value in self.sections.items()}}

    @classmethod
    def from_dict(cls, d: dict, resuming: bool = False) -> "FitConfig":
        """`resuming`: `d` is the config.json of a run being resumed, so a field it lacks was added after
        the run started and takes its section's `BEFORE` value (what the run was doing), not today's
        default. Any other config (`--config`, the API) is a partial one: missing fields are defaults."""
        if not isinstance(d, dict):
            raise UlmfitError(f"a config must be a JSON object of sections, not {type(d).__name__}")
        all_sections = {**CORE_SECTIONS, **registry.sections()}
        d = {**cls.BEFORE, **d} if resuming else d
        return cls(**{k: _build(all_sections[k], v, k, resuming) if k in all_sections else v for k, v in d.items()})

    @classmethod
    def load(cls, path: str | Path, resuming: bool = False) -> "FitConfig":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UlmfitError(f"{path}: not a readable ulmfit config ({e}); pass the config.json of a model folder") from e
        try:
            return cls.from_dict(d, resuming=resuming)
        except UlmfitError as e:
            raise UlmfitError(f"{path}: {e}") from e


def _build(cls, d: dict, section: str, resuming: bool = False):
    if not isinstance(d, dict):
        raise UlmfitError(f"config section '{section}' must be an object of fields, not {d!r}")
    renamed = getattr(cls, "RENAMED", {})
    d = {renamed.get(k, k): v for k, v in d.items()}
    if resuming:
        d = {**getattr(cls, "BEFORE", {}), **d}
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise UlmfitError(f"config section '{section}' has unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
    return cls(**d)


def override_key(item: str) -> tuple[str, str]:
    """(section, field) that one `--set SECTION.FIELD=VALUE` names; a bare FIELD is the top level, "fit"."""
    key = item.split("=", 1)[0].strip()
    return tuple(key.split(".", 1)) if "." in key else ("fit", key)


def apply_overrides(cfg, assignments: list[str], typed_as: dict[str, str] | None = None):
    """`--set lm.epochs=3 --set clf.lrs=[0.01,0.005]`: values parsed as JSON, else kept as strings;
    each checked as the config is rebuilt (one line naming field, value and what is allowed).
    `typed_as` maps an assignment a command built from one of its own flags to that flag as the user
    typed it (`ulmfit distill --temperature 0`), so that its error names the flag, not a `--set`."""
    for item in assignments or []:
        if "=" not in item:
            raise UlmfitError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set lm.epochs=3")
        (section, name), raw = override_key(item), item.split("=", 1)[1]
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        target = cfg if section == "fit" else getattr(cfg, section, None)
        if target is None or not is_dataclass(target):
            allowed = ", ".join([*CORE_SECTIONS, *registry.sections(), "fit"])
            raise UlmfitError(f"--set {item!r}: unknown section {section!r} ({allowed})")
        name = getattr(type(target), "RENAMED", {}).get(name, name)
        names = {f.name for f in fields(target)} - {"sections"}
        if name not in names:
            raise UlmfitError(f"--set {item!r}: {section} has no field {name!r}; fields: {sorted(names)}")
        try:
            new = replace(target, **{name: value})
        except UlmfitError as e:
            raise UlmfitError(f"{(typed_as or {}).get(item) or f'--set {item!r}'}: {e}") from e
        if section == "fit":
            cfg = new
        else:
            setattr(cfg, section, new)
    return cfg


# the recipes shipped with the package register their sections (imported here for compatibility:
# `from ulmfit.recipes.config import ClassifierTrainConfig`)
from ulmfit.recipes.siatl_config import SiatlConfig  # noqa: E402,F401
from ulmfit.recipes.ulmfit_config import ClassifierTrainConfig  # noqa: E402,F401
