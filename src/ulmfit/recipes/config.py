"""One configuration dataclass per stage, saved as `config.json` in every model folder.

Defaults come from the ULMFiT paper (Howard & Ruder 2018) and fastai's text defaults, sized
down where a 2-core CPU needs it (the `small` preset); each field says where it comes from.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.recipes.siatl_config import SiatlConfig


DIRECTIONS = ("fwd", "bwd", "both")


@dataclass
class DataConfig:
    train: str | None = None  # paths, recorded so a run can be repeated from its folder
    valid: str | None = None
    unlabeled: list[str] = field(default_factory=list)
    text_col: str = "text"
    label_col: str = "label"
    encoding: str = "utf-8"
    valid_frac: float = 0.1  # held out (stratified) from train when no validation file is given
    # Low-resource mode (at most one of the two): train the classifier on a stratified, seeded sample
    # of the training rows; the other rows' texts join the language model's unlabelled text.
    labels_per_class: int | None = None
    max_labels: int | None = None  # in proportion to the class frequencies, at least one per class


@dataclass
class LMTrainConfig:
    """Language-model fine-tuning (ULMFiT §3.2), or training from scratch without a pretrained LM."""

    preset: str = "small"  # model size when not starting from a pretrained LM (see models.awd_lstm.PRESETS)
    drop_mult: float = 0.3  # fastai's book uses 0.3 for LM fine-tuning
    bs: int = 32  # more, smaller steps: on small target corpora the step count is what runs short
    bptt: int = 70
    variable_bptt: bool = True  # Merity et al. §4.1
    epochs: int = 4
    # Rate of the top group in the unfrozen epochs. None: 3e-3 when fine-tuning a pretrained LM
    # (fastai's book uses 2e-3..1e-2), 2e-2 when training from scratch (measured on the tweets: at
    # 5e-3 a from-scratch LM was still at unigram level after 2 epochs).
    lr: float | None = None
    frozen_epochs: int = 1  # with a pretrained LM: first train only the embeddings (new words), fastai-style
    frozen_lr: float = 1e-2
    wd: float = 0.1
    schedule: str = "one_cycle"  # or "stlr" (ULMFiT §3.2)
    min_freq: int = 3  # fastai's default
    max_vocab: int = 30000
    max_tokens: int | None = None  # subsample the LM text to this many tokens (None: all)
    valid_frac: float = 0.05  # documents held out for perplexity and early stopping
    patience: int | None = 2
    alpha: float = 2.0  # AR
    beta: float = 1.0  # TAR


@dataclass
class ClassifierTrainConfig:
    """Classifier fine-tuning with gradual unfreezing (ULMFiT §3.3)."""

    drop_mult: float = 0.5  # fastai's book
    bs: int = 64
    bptt: int = 72
    max_len: int = 72 * 20
    max_tokens: int | None = None  # read at most this many tokens per document (None: all)
    lin_sizes: tuple[int, ...] = (50,)
    # Gradual unfreezing: one learning rate and epoch count per stage: head, -2, -3, all.
    # None: fastai's book rates (2e-2, 1e-2, 5e-3, 1e-3) on a pretrained encoder; from scratch the
    # encoder has more to learn, so the last two stages keep higher rates (2e-2, 1e-2, 1e-2, 5e-3).
    lrs: tuple[float, ...] | None = None
    epochs: tuple[int, ...] = (1, 1, 1, 3)
    schedule: str = "one_cycle"
    wd: float = 0.01
    metric: str = "macro_f1"  # model selection and early stopping
    patience: int | None = 2
    class_weights: str = "none"  # none | balanced
    # With few labels an epoch is a handful of steps (500 texts: 8 batches of 64); each training
    # epoch then repeats the reshuffled data until it has at least this many steps, so every stage
    # of gradual unfreezing gets enough updates. The full tweets (465 batches) are unaffected.
    min_steps_per_epoch: int = 50


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
class FitConfig:
    data: DataConfig = field(default_factory=DataConfig)
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    clf: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    siatl: SiatlConfig = field(default_factory=SiatlConfig)
    recipe: str = "ulmfit"  # ulmfit | siatl
    # "auto": the shipped general-en LM when installed, else from scratch; a shipped name; a
    # language-model folder; or None / "none" to train the LM from scratch on your text.
    pretrained: str | None = "auto"
    # fwd | bwd | both. A backward model reads every document from its last token to its first;
    # "both" trains a forward and a backward model and averages their probabilities (ULMFiT §4).
    direction: str = "fwd"
    # The backward LM of a "both" run (the forward one is `pretrained`; with direction "bwd" alone,
    # `pretrained` is the backward LM). "auto": the shipped general-en-bwd when installed, else scratch.
    pretrained_bwd: str | None = "auto"
    optimizer: str = "adamw"
    precision: str = "fp32"
    seed: int = 0

    @property
    def directions(self) -> list[str]:
        """The models this run trains, in order: ["fwd"], ["bwd"] or ["fwd", "bwd"]."""
        if self.direction not in DIRECTIONS:
            raise UlmfitError(f"direction (--direction) must be one of {list(DIRECTIONS)}, not {self.direction!r}")
        return ["fwd", "bwd"] if self.direction == "both" else [self.direction]

    def pretrained_for(self, direction: str) -> str | None:
        """The pretrained-LM setting of the `direction` model of this run."""
        if self.direction == "both" and direction == "bwd":
            # "auto" follows --pretrained: with no pretrained forward LM the backward one starts from scratch too
            return None if self.pretrained_bwd == "auto" and self.pretrained is None else self.pretrained_bwd
        return self.pretrained

    def resolved(self, direction: str | None = None) -> "FitConfig":
        """A copy with every `None` ("auto") rate replaced by its value for the `direction` model
        (default: the first one this run trains): fine-tuning rates with a pretrained LM, else scratch rates."""
        from ulmfit.recipes.model_dir import resolve_pretrained

        direction = direction or self.directions[0]
        flag = "--pretrained-bwd" if self.direction == "both" and direction == "bwd" else "--pretrained"
        pretrained = resolve_pretrained(self.pretrained_for(direction), direction, flag=flag)
        large = pretrained is not None and _hidden_size(pretrained) >= LARGE_HIDDEN
        lm_lr = self.lm.lr if self.lm.lr is not None else (3e-3 if large else 2e-2)
        lrs = self.clf.lrs if self.clf.lrs is not None else (
            (2e-2, 1e-2, 5e-3, 1e-3) if large else (2e-2, 1e-2, 1e-2, 5e-3))
        siatl = self.siatl
        if pretrained is None and self.recipe == "siatl" and siatl == SiatlConfig():
            # A random LSTM stack passes almost no signal up: train it all from the first epoch, with
            # Adam at a from-scratch rate (measured with the paper's SGD at a fine-tuning rate and the
            # staged unfreezing: macro-F1 at majority-class level after 3 epochs).
            siatl = replace(siatl, pretrained_optimizer="adam", pretrained_lr=1e-2, new_lr=1e-2,
                            unfreeze_lstm_epoch=1, unfreeze_embedding_epoch=1)
        return replace(self, lm=replace(self.lm, lr=lm_lr), clf=replace(self.clf, lrs=tuple(lrs)), siatl=siatl)


    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        return cls(
            data=_build(DataConfig, d.get("data", {}), "data"),
            lm=_build(LMTrainConfig, d.get("lm", {}), "lm"),
            clf=_build(ClassifierTrainConfig, d.get("clf", {}), "clf"),
            siatl=_build(SiatlConfig, d.get("siatl", {}), "siatl"),
            **{k: v for k, v in d.items() if k not in ("data", "lm", "clf", "siatl")},
        )

    @classmethod
    def load(cls, path: str | Path) -> "FitConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise UlmfitError(f"{path}: not a readable ulmfit config ({e}); pass the config.json of a model folder") from e


def _build(cls, d: dict, section: str):
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise UlmfitError(f"config section '{section}' has unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
    d = {k: tuple(v) if isinstance(v, list) and k in ("lin_sizes", "lrs", "epochs") else v for k, v in d.items()}
    return cls(**d)


def apply_overrides(cfg, assignments: list[str]):
    """`--set lm.epochs=3 --set clf.lrs=[0.01,0.005]`: values parsed as JSON, else kept as strings."""
    for item in assignments or []:
        if "=" not in item:
            raise UlmfitError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set lm.epochs=3")
        key, raw = item.split("=", 1)
        section, name = key.split(".", 1) if "." in key else ("fit", key)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        if section == "fit":
            target = cfg
        else:
            target = getattr(cfg, section, None)
        if target is None or not is_dataclass(target):
            raise UlmfitError(f"--set {item!r}: unknown section {section!r} (data, lm, clf, siatl, fit)")
        names = {f.name for f in fields(target)}
        if name not in names:
            raise UlmfitError(f"--set {item!r}: {section} has no field {name!r}; fields: {sorted(names)}")
        new = replace(target, **{name: value})
        if section == "fit":
            cfg = new
        else:
            setattr(cfg, section, new)
    return cfg
