"""The model folder: everything needed to reload, predict, and repeat the run.

```
DIR/ulmfit.json              format marker: kind (lm | classifier), version, classes, direction of the
                             files in DIR (fwd | bwd; absent in old folders: fwd), directions (classifiers:
                             the models whose probabilities are averaged, e.g. ["fwd", "bwd"])
DIR/config.json              the FitConfig of the run (repeat it with `ulmfit fit --config`)
DIR/tokenizer.json           TokenizerConfig
DIR/vocab.json               the vocabulary
DIR/lm_config.json           AWDLSTMConfig of the language model
DIR/lm.safetensors           fine-tuned language model (text generation, a later classifier)
DIR/classifier_config.json   encoder + head configs          (classifier folders)
DIR/classifier.safetensors   best classifier by the chosen metric (classifier folders)
DIR/history.jsonl            one line per epoch; history.png the curves; report.md the metrics
DIR/checkpoints/             resume state while training (removed when a run completes)
DIR/bwd/                     `--direction both`: the backward model, the same layout (its own marker,
                             config, vocab, LM, classifier, history, report); a model folder of its own
```
With `--direction bwd` alone the backward model's files are in DIR itself (marker direction "bwd").
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import AWDLSTM, AWDLSTMConfig, LanguageModel
from ulmfit.models.classifier import ClassifierConfig, TextClassifier
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab
from ulmfit.train.checkpoint import atomic_write_json, load_weights, save_weights

FORMAT = "ulmfit-model"
VERSION = 1
SHIPPED = Path(__file__).resolve().parent.parent / "pretrained"  # language models inside the package
DEFAULT_PRETRAINED = "general-en"  # the forward model; the backward one is "general-en-bwd"
DIRECTION_NAMES = {"fwd": "forward", "bwd": "backward"}


def default_pretrained(direction: str = "fwd") -> str:
    """The shipped model that `auto` means for this direction: general-en / general-en-bwd."""
    return DEFAULT_PRETRAINED if direction == "fwd" else f"{DEFAULT_PRETRAINED}-{direction}"


def shipped_models() -> list[str]:
    return sorted(p.name for p in SHIPPED.glob("*") if (p / "ulmfit.json").exists()) if SHIPPED.is_dir() else []


def lm_folder(name: str | Path) -> Path:
    """A shipped model's name (general-en) to its folder; anything else is taken as a path."""
    return SHIPPED / str(name) if str(name) in shipped_models() else Path(name)


def resolve_pretrained(name: str | Path | None, direction: str | None = None,
                       flag: str = "--pretrained") -> Path | None:
    """A pretrained-LM setting to a folder: None/'none' -> None (from scratch); 'auto' -> the shipped
    model of `direction` (general-en, general-en-bwd) when present, else None; a shipped name -> its
    folder; else a path. With `direction`, a folder of the other direction is an error."""
    if name is None or str(name).lower() == "none":
        return None
    if str(name) == "auto":
        default = default_pretrained(direction or "fwd")
        return SHIPPED / default if default in shipped_models() else None
    path = lm_folder(name)
    if not path.exists():
        raise UlmfitError(f"pretrained model {name!r} not found: pass a language-model folder, one of the shipped "
                          f"models {shipped_models() or '(none installed)'}, or 'none' to start from scratch")
    if direction is not None and (found := marker_direction(path)) != direction:
        raise UlmfitError(f"{flag} {name}: {path} holds a {DIRECTION_NAMES.get(found, found)} ({found}) language model "
                          f"but this model reads {DIRECTION_NAMES[direction]} ({direction}); pass a {direction} LM "
                          f"({default_pretrained(direction)}, or one from `ulmfit pretrain --set direction={direction}`)")
    return path


def marker_direction(folder: Path) -> str:
    """The direction of the model files in `folder` as its marker says; old markers without one: fwd."""
    try:
        return json.loads((Path(folder) / "ulmfit.json").read_text()).get("direction", "fwd")
    except (OSError, json.JSONDecodeError, AttributeError):
        return "fwd"  # not a readable marker: loading the folder reports the real problem


def direction_folder(folder: Path, first: str, direction: str) -> Path:
    """Where the `direction` model of a run is: the run's first model (`first`, the marker's "direction")
    lives in the folder itself, the backward model of a `both` run in `folder/bwd`."""
    return folder if direction == first else folder / direction


def write_marker(folder: Path, kind: str, **extra) -> None:
    from ulmfit import __version__

    atomic_write_json(folder / "ulmfit.json", {"format": FORMAT, "version": VERSION, "kind": kind,
                                               "ulmfit_version": __version__, **extra})


def read_marker(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise UlmfitError(f"{folder}: model folder not found; pass the --out folder of `ulmfit fit` or `ulmfit finetune-lm`")
    marker = folder / "ulmfit.json"
    if not marker.exists():
        raise UlmfitError(f"{folder}: not a ulmfit model folder (no ulmfit.json); pass the --out folder of `ulmfit fit`")
    try:
        meta = json.loads(marker.read_text())
    except json.JSONDecodeError as e:
        raise UlmfitError(f"{marker}: corrupt ({e}); retrain the model or restore the folder from a copy") from e
    if meta.get("format") != FORMAT:
        raise UlmfitError(f"{marker}: not a ulmfit model marker (format={meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise UlmfitError(f"{folder}: model folder format version {meta.get('version')} but this ulmfit reads version "
                          f"{VERSION}; retrain with this version or install the ulmfit that wrote it ({meta.get('ulmfit_version')})")
    return meta


def save_text_pipeline(folder: Path, tok_cfg: TokenizerConfig, vocab: Vocab) -> None:
    atomic_write_json(folder / "tokenizer.json", asdict(tok_cfg))
    vocab.save(folder / "vocab.json")


def load_text_pipeline(folder: Path) -> tuple[Tokenizer, Vocab]:
    tok_cfg = TokenizerConfig(**_read_json(folder / "tokenizer.json"))
    return Tokenizer(tok_cfg), Vocab.load(folder / "vocab.json")


def save_lm(folder: Path, lm: LanguageModel, cfg: AWDLSTMConfig) -> None:
    atomic_write_json(folder / "lm_config.json", cfg.to_dict())
    save_weights(lm.state_dict(), folder / "lm.safetensors")


def load_lm(folder: str | Path) -> tuple[LanguageModel, Tokenizer, Vocab]:
    folder = Path(folder)
    read_marker(folder)
    if not (folder / "lm.safetensors").exists():
        raise UlmfitError(f"{folder}: holds no language model (lm.safetensors missing)")
    tokenizer, vocab = load_text_pipeline(folder)
    cfg = AWDLSTMConfig.from_dict(_read_json(folder / "lm_config.json"))
    lm = LanguageModel(cfg)
    lm.load_state_dict(load_weights(folder / "lm.safetensors"))
    return lm.eval(), tokenizer, vocab


def save_classifier(folder: Path, model: TextClassifier, enc_cfg: AWDLSTMConfig, head_cfg: ClassifierConfig) -> None:
    atomic_write_json(folder / "classifier_config.json", {"encoder": enc_cfg.to_dict(), "head": head_cfg.to_dict()})
    save_weights(model.state_dict(), folder / "classifier.safetensors")


def load_classifier_model(folder: Path) -> TextClassifier:
    cfg = _read_json(folder / "classifier_config.json")
    model = TextClassifier(AWDLSTM(AWDLSTMConfig.from_dict(cfg["encoder"])), ClassifierConfig.from_dict(cfg["head"]))
    model.load_state_dict(load_weights(folder / "classifier.safetensors"))
    return model.eval()


def save_backbone(folder: Path, backbone, pipeline, prefix: str = "backbone") -> None:
    """Any registered backbone (models/backbone.py) and its text pipeline: PREFIX.json (kind,
    architecture, pipeline) + PREFIX.safetensors, reloadable offline by `load_backbone`."""
    from ulmfit.models.backbone import get_backbone

    spec = get_backbone(backbone.kind)
    atomic_write_json(folder / f"{prefix}.json", {"kind": spec.kind, "config": spec.config(backbone),
                                                  "pipeline": spec.pipeline_to_json(pipeline)})
    save_weights(backbone.state_dict(), folder / f"{prefix}.safetensors")


def load_backbone(folder: Path, prefix: str = "backbone"):
    """(backbone in eval mode, its text pipeline) from what `save_backbone` wrote; the kind picks
    the loader from the backbone registry."""
    from ulmfit.models.backbone import get_backbone

    d = _read_json(folder / f"{prefix}.json")
    try:
        spec = get_backbone(d["kind"])
        backbone = spec.from_config(d["config"])
        pipeline = spec.pipeline_from_json(d["pipeline"])
    except (KeyError, TypeError) as e:
        raise UlmfitError(f"{folder / f'{prefix}.json'}: corrupt ({type(e).__name__}: {e}); retrain or restore it") from e
    backbone.load_state_dict(load_weights(folder / f"{prefix}.safetensors"))
    return backbone.eval(), pipeline


def remove_checkpoints(folder: Path) -> None:
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise UlmfitError(f"{path.parent}: incomplete model folder ({path.name} missing); retrain or restore it")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UlmfitError(f"{path}: corrupt JSON ({e}); retrain or restore the model folder") from e
