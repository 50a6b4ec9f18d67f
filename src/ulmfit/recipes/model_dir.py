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

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import AWDLSTM, AWDLSTMConfig, LanguageModel
from ulmfit.models.classifier import ClassifierConfig, TextClassifier
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab
from ulmfit.fileio import atomic_write_json, make_dir, staging_path, swap_in, write_lock
from ulmfit.train import distributed
from ulmfit.train.checkpoint import load_weights, save_weights

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
    """ulmfit.json, checked: a JSON object of this format and version, a known kind, and for a
    classifier a list of two or more distinct class names. Part of the one folder validator."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UlmfitError(f"{folder}: model folder not found; pass the --out folder of `ulmfit fit` or `ulmfit finetune-lm`")
    marker = folder / "ulmfit.json"
    if not marker.exists():
        raise UlmfitError(f"{folder}: not a ulmfit model folder (no ulmfit.json); pass the --out folder of `ulmfit fit`")
    meta = read_json(marker)
    if meta.get("format") != FORMAT:
        raise UlmfitError(f"{marker}: not a ulmfit model marker (format={meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise UlmfitError(f"{folder}: model folder format version {meta.get('version')!r} but this ulmfit reads version "
                          f"{VERSION}; retrain with this version or install the ulmfit that wrote it ({meta.get('ulmfit_version')})")
    if meta.get("kind") not in ("lm", "classifier", "ensemble"):
        raise UlmfitError(f"{marker}: field 'kind' is {meta.get('kind')!r}, not 'lm', 'classifier' or 'ensemble'; "
                          "restore the folder from a copy or retrain")
    if meta["kind"] == "ensemble":
        _check_members(marker, meta.get("members"))
    classes = meta.get("classes")
    if meta["kind"] in ("classifier", "ensemble") and not (isinstance(classes, list) and len(classes) >= 2
                                             and all(isinstance(c, str) and c for c in classes)
                                             and len(set(classes)) == len(classes)):
        raise UlmfitError(f"{marker}: field 'classes' must list two or more distinct class names, not "
                          f"{str(classes)[:80]}; restore the folder from a copy or retrain")
    if "direction" in meta and meta["direction"] not in ("fwd", "bwd"):
        raise UlmfitError(f"{marker}: field 'direction' is {str(meta['direction'])[:40]!r}, not 'fwd' or 'bwd'; "
                          "restore the folder from a copy or retrain")
    dirs = meta.get("directions")
    if dirs is not None and not (isinstance(dirs, list) and dirs and all(d in ("fwd", "bwd") for d in dirs)
                                 and len(set(dirs)) == len(dirs)):
        raise UlmfitError(f"{marker}: field 'directions' must list 'fwd' and/or 'bwd', not {str(dirs)[:60]}; "
                          "restore the folder from a copy or retrain")
    return meta


def read_config(path: Path, cls, key: str | None = None):
    """A config dataclass from a JSON file (or its `key` section): an unknown field, a wrong type or
    an impossible value is one line naming the file and the field."""
    d = read_json(path)
    if key is not None:
        d = d.get(key)
        if not isinstance(d, dict):
            raise UlmfitError(f"{path}: field '{key}' is missing or not an object; restore the model folder or retrain")
    try:
        return cls.from_dict(d) if hasattr(cls, "from_dict") else cls(**d)
    except UlmfitError as e:
        raise UlmfitError(f"{path}{f' ({key})' if key else ''}: {e}") from None
    except (TypeError, ValueError) as e:
        raise UlmfitError(f"{path}{f' field {key!r}' if key else ''} is not a valid {cls.__name__} ({e}); "
                          "restore the model folder or retrain") from None


def load_weights_into(model, path: Path, config_file: str):
    """Load `path` into `model` after checking every tensor's name and shape against what the
    folder's `config_file` built: weights from another model, or a config edited by hand, are one
    line naming the file and the parameter."""
    state = load_weights(path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UlmfitError(f"{path}: not the weights of the model {config_file} describes (missing {missing[:2]}, "
                          f"unexpected {unexpected[:2]}); was it copied from another model? restore the folder or retrain")
    for name, t in expected.items():
        if tuple(state[name].shape) != tuple(t.shape):
            raise UlmfitError(f"{path}: '{name}' has shape {list(state[name].shape)} but {config_file} implies "
                              f"{list(t.shape)}; the config and the weights disagree (a file from another model, or "
                              "an edited config); restore the folder or retrain")
    model.load_state_dict(state)
    return model


def check_vocab(folder: Path, vocab: Vocab, vocab_size: int, config_file: str) -> None:
    if len(vocab) != vocab_size:
        raise UlmfitError(f"{folder / 'vocab.json'}: {len(vocab):,} words but {config_file} field 'vocab_size' is "
                          f"{vocab_size:,} (embedding rows); the vocabulary belongs to another model; restore the "
                          "folder or retrain")


def check_classes(folder: Path, n_classes: int | None, head_classes: int, config_file: str) -> None:
    if n_classes is not None and n_classes != head_classes:
        raise UlmfitError(f"{folder / 'ulmfit.json'}: field 'classes' names {n_classes} classes but {config_file} "
                          f"field 'n_classes' is {head_classes} (the head's output size); restore the folder or retrain")


def save_text_pipeline(folder: Path, tok_cfg: TokenizerConfig, vocab: Vocab) -> None:
    atomic_write_json(folder / "tokenizer.json", asdict(tok_cfg))
    vocab.save(folder / "vocab.json")


def load_text_pipeline(folder: Path) -> tuple[Tokenizer, Vocab]:
    tok_cfg = read_config(Path(folder) / "tokenizer.json", TokenizerConfig)
    return Tokenizer(tok_cfg), Vocab.load(Path(folder) / "vocab.json")


def save_lm(folder: Path, lm: LanguageModel, cfg: AWDLSTMConfig) -> None:
    atomic_write_json(folder / "lm_config.json", cfg.to_dict())
    save_weights(lm.state_dict(), folder / "lm.safetensors")


def _check_members(marker: Path, members) -> None:
    """An ensemble's members (recipes/ensemble.py): folders inside it, by relative path, with weights >= 0."""
    ok = isinstance(members, list) and len(members) >= 2 and all(
        isinstance(m, dict) and isinstance(m.get("path"), str) and m["path"] and not Path(m["path"]).is_absolute()
        and ".." not in Path(m["path"]).parts and isinstance(m.get("weight"), (int, float)) and m["weight"] >= 0
        for m in members)
    if not ok:
        raise UlmfitError(f"{marker}: field 'members' must list two or more member folders inside the ensemble "
                          f"(relative paths) with weights >= 0, not {str(members)[:80]}; rebuild it with `ulmfit ensemble`")


def load_lm(folder: str | Path) -> tuple[LanguageModel, Tokenizer, Vocab]:
    folder = Path(folder)
    read_marker(folder)
    if not (folder / "lm.safetensors").exists():
        raise UlmfitError(f"{folder}: holds no language model (lm.safetensors missing)")
    tokenizer, vocab = load_text_pipeline(folder)
    cfg = read_config(folder / "lm_config.json", AWDLSTMConfig)
    check_vocab(folder, vocab, cfg.vocab_size, "lm_config.json")
    lm = load_weights_into(LanguageModel(cfg), folder / "lm.safetensors", "lm_config.json")
    return lm.eval(), tokenizer, vocab


def save_classifier(folder: Path, model: TextClassifier, enc_cfg: AWDLSTMConfig, head_cfg: ClassifierConfig) -> None:
    atomic_write_json(folder / "classifier_config.json", {"encoder": enc_cfg.to_dict(), "head": head_cfg.to_dict()})
    save_weights(model.state_dict(), folder / "classifier.safetensors")


def vocab_and_classes(folder: Path) -> tuple[Vocab | None, int | None]:
    """What a classifier's weights are checked against: the folder's vocabulary and its marker's
    number of classes (None for what the folder does not hold yet, e.g. during training)."""
    folder = Path(folder)
    vocab = Vocab.load(folder / "vocab.json") if (folder / "vocab.json").exists() else None
    meta = read_marker(folder) if (folder / "ulmfit.json").exists() else {}
    return vocab, len(meta["classes"]) if meta.get("kind") == "classifier" else None


def load_classifier_model(folder: Path) -> TextClassifier:
    """The classifier of `folder`, checked against its vocabulary and its marker's classes."""
    folder = Path(folder)
    path = folder / "classifier_config.json"
    enc, head = read_config(path, AWDLSTMConfig, "encoder"), read_config(path, ClassifierConfig, "head")
    vocab, n_classes = vocab_and_classes(folder)
    if vocab is not None:
        check_vocab(folder, vocab, enc.vocab_size, "classifier_config.json (encoder)")
    check_classes(folder, n_classes, head.n_classes, "classifier_config.json (head)")
    model = TextClassifier(AWDLSTM(enc), head)
    return load_weights_into(model, folder / "classifier.safetensors", "classifier_config.json").eval()


def classifier_marker(folder: str | Path) -> dict:
    """`read_marker` of a folder that must hold a classifier (or an ensemble of them): anything else is one line."""
    meta = read_marker(folder)
    if meta.get("kind") not in ("classifier", "ensemble"):
        raise UlmfitError(f"{folder}: holds a {meta.get('kind')} model, not a classifier; "
                          f"use `ulmfit generate` with it, or train a classifier with `ulmfit fit`")
    return meta


def finished(folder: Path) -> bool:
    """A model folder whose run completed: its marker is written and no checkpoints are left to resume from."""
    return (folder / "ulmfit.json").exists() and not (folder / "checkpoints").exists()


def resume_folder(out: str | Path) -> Path:
    """The folder an interrupted run of `--out out` lives in: the staging folder of an interrupted
    `--overwrite` (the old model stays in `out` until the new one is complete), else `out`.
    A folder with nothing to resume, or holding a finished model, is one clear line."""
    out = Path(out)
    staging = staging_path(out)
    folder = staging if staging.is_dir() and any(staging.iterdir()) else out
    if not folder.is_dir() or not any(folder.iterdir()):
        raise UlmfitError(f"{out}: nothing to resume (the run was stopped before it wrote anything); "
                          "start it again without --resume")
    if finished(folder):
        raise UlmfitError(f"{out}: the model is finished, nothing to resume; use it as it is, or pass --overwrite "
                          "(instead of --resume) to train it again")
    return folder


@contextlib.contextmanager
def writing(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Hold `out`'s write lock and yield the folder to build the model in.

    A new model is built in `out` itself (its ulmfit.json is written last, so it never looks complete
    before it is). `overwrite` of a folder that holds something builds the new model in a staging
    folder beside it and swaps it in only when the block completes: until then the old model stays
    whole and usable. `resume` continues where the interrupted run was (see :func:`resume_folder`).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UlmfitError(f"--out {out} is a file, not a folder; pass a folder path")
    with write_lock(out):
        if resume:
            work = resume_folder(out)
        elif overwrite and out.is_dir() and any(out.iterdir()):
            work = staging_path(out)
            if distributed.is_main():  # [distributed] rank 0 owns the folder
                shutil.rmtree(work, ignore_errors=True)  # an earlier interrupted --overwrite: start again
        else:
            work = out
        created = not work.exists()
        make_dir(work)
        try:
            yield work
        except BaseException:
            if created and work.is_dir() and not any(work.iterdir()):
                work.rmdir()  # refused before writing anything: leave no empty folder behind
            raise
        if work != out:
            swap_in(work, out)


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

    d = read_json(folder / f"{prefix}.json")
    try:
        spec = get_backbone(d["kind"])
        backbone = spec.from_config(d["config"])
        pipeline = spec.pipeline_from_json(d["pipeline"])
    except (KeyError, TypeError) as e:
        raise UlmfitError(f"{folder / f'{prefix}.json'}: corrupt ({type(e).__name__}: {e}); retrain or restore it") from e
    load_weights_into(backbone, folder / f"{prefix}.safetensors", f"{prefix}.json")
    return backbone.eval(), pipeline


def remove_checkpoints(folder: Path) -> None:
    if not distributed.is_main():  # [distributed] rank 0 owns the folder (and may still need them)
        return
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)


def read_json(path: Path) -> dict:
    if not path.exists():
        raise UlmfitError(f"{path.parent}: incomplete model folder ({path.name} missing); retrain or restore it")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UlmfitError(f"{path}: corrupt JSON ({type(e).__name__}); retrain or restore the model folder") from None
    if not isinstance(d, dict):
        raise UlmfitError(f"{path}: holds a JSON {type(d).__name__}, not an object; retrain or restore the model folder")
    return d
