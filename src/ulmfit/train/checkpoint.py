"""Safetensors weights and resume state, written through the one atomic writer (``ulmfit.fileio``).

Nothing here unpickles: weights are safetensors; resume state (:func:`save_state`) is safetensors
for the tensors plus a JSON skeleton in the same file's header for everything else, so a crafted
checkpoint can at worst be refused, never run code. Import the file writers from ``ulmfit.fileio``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_bytes, atomic_write_text

ALIAS_KEY = "ulmfit_aliases"  # safetensors metadata: JSON {alias_name: stored_name}

STATE_KEY = "ulmfit_state"  # safetensors metadata of a resume-state file: the JSON skeleton


def _view_key(t: torch.Tensor) -> tuple:
    """Identity of a tensor view: two keys with the same view are tied weights."""
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _dedupe(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split into (unique tensors, {alias: stored name}); the first name of a tied tensor is kept."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"save_weights: {name!r} is a {type(tensor).__name__}, not a tensor")
        key = _view_key(tensor)
        if tensor.numel() > 0 and key in first_name:
            aliases[name] = first_name[key]
        else:
            first_name.setdefault(key, name)
            unique[name] = tensor
    return unique, aliases


def save_weights(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Save a state dict as safetensors, atomically.

    Tied weights (two names for the same tensor, e.g. the LM decoder tied to the embedding) are
    stored once and the other names recorded in the metadata under ``ulmfit_aliases``;
    :func:`load_weights` restores them as the same tensor. Every stored tensor is a contiguous
    CPU clone, so other views sharing storage are fine too. ``dtype`` (e.g. ``torch.float16``)
    converts floating-point tensors only. ``metadata``: extra string pairs for the header.
    """
    unique, aliases = _dedupe(state_dict)
    tensors = {}
    for name, t in unique.items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous().clone()
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if aliases:
        meta[ALIAS_KEY] = json.dumps(aliases, sort_keys=True)
    atomic_write_bytes(path, st_save(tensors, metadata=meta or None))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file written by :func:`save_weights`, with tied names restored.

    Raises ``UlmfitError`` naming the file when it is missing or not a readable safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise UlmfitError(f"weights file not found: {path}; check the model folder or train again")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            out = {name: f.get_tensor(name) for name in f.keys()}
        aliases = json.loads(meta.get(ALIAS_KEY, "{}"))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise UlmfitError(
            f"weights file {path} is corrupt or not a safetensors file ({type(e).__name__}: {e}); "
            "restore it from a backup or train again"
        ) from e
    for alias, target in aliases.items():
        if target not in out:
            raise UlmfitError(f"weights file {path} is corrupt: alias {alias!r} points to missing {target!r}")
        out[alias] = out[target]
    return out


def read_weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a safetensors file (without the alias bookkeeping)."""
    path = Path(path)
    if not path.is_file():
        raise UlmfitError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:
        raise UlmfitError(f"weights file {path} is corrupt or not a safetensors file ({e})") from e
    meta.pop(ALIAS_KEY, None)
    return meta


# --- resume state: nested dicts/lists/tuples of tensors and JSON scalars, no pickle ----------------

def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON skeleton of `obj`; every tensor is moved into `tensors` under a fresh name."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _flatten(v, tensors) for k, v in obj.items()}}
        # torch optimizers key their state by int parameter ids: keep the keys' types
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        return obj.item()
    raise TypeError(f"save_state: cannot store a {type(obj).__name__} (tensors, dicts, lists, tuples, "
                    "numbers, strings and None only)")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor], path: Path) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors, path) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) != 1:
        raise UlmfitError(f"{path}: not a ulmfit resume-state file (unexpected entry {sorted(obj)[:3]}); "
                          "delete its checkpoints/ folder and start the run again")
    (tag, value), = obj.items()
    if tag == "__tensor__":
        if value not in tensors:
            raise UlmfitError(f"{path}: resume state names a missing tensor {value!r}; delete the checkpoints/ "
                              "folder and start the run again")
        return tensors[value]
    if tag == "__dict__":
        return {k: _unflatten(v, tensors, path) for k, v in value.items()}
    if tag == "__items__":
        return {_unflatten(k, tensors, path): _unflatten(v, tensors, path) for k, v in value}
    if tag == "__tuple__":
        return tuple(_unflatten(v, tensors, path) for v in value)
    raise UlmfitError(f"{path}: not a ulmfit resume-state file (unknown tag {tag!r}); delete its checkpoints/ "
                      "folder and start the run again")


class EpochSnapshots:
    """A `run_phase` callback that keeps the weights of every epoch, not only the best and the last:
    `<folder>/<prefix>-epoch<N>.safetensors`, N the epoch's number in the phase's log. For comparing
    the epochs afterwards (benchmarks/lm_stopping.py trains a classifier from each LM epoch)."""

    def __init__(self, model: torch.nn.Module, folder: str | os.PathLike, prefix: str = "lm"):
        self.model, self.folder, self.prefix = model, Path(folder), prefix

    def path(self, epoch: int) -> Path:
        return self.folder / f"{self.prefix}-epoch{int(epoch)}.safetensors"

    def on_epoch_end(self, record: dict) -> None:
        save_weights(self.model.state_dict(), self.path(record["epoch"]))


def save_state(obj: Any, path: str | os.PathLike) -> None:
    """Save resume state (model and optimizer state dicts, RNG state, positions, history...) as one
    safetensors file: the tensors as tensors, everything else as JSON in the header. Atomic."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_flatten(obj, tensors))
    atomic_write_bytes(path, st_save(tensors, metadata={STATE_KEY: skeleton}))


def load_state(path: str | os.PathLike) -> Any:
    """Read what :func:`save_state` wrote. Never unpickles: a file that is not such a safetensors
    file (a planted pickle, a truncated write) is refused with one line naming it."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        skeleton = json.loads(meta[STATE_KEY])
    except Exception as e:  # safetensors raises several types for a file that is not one of its own
        raise UlmfitError(f"{path}: not a ulmfit resume-state file ({type(e).__name__}); it was not loaded; delete "
                          "the checkpoints/ folder and start the run again without --resume") from None
    return _unflatten(skeleton, tensors, path)


def rewrite_phase_log(path: str | os.PathLike, phase: str, history: list[dict]) -> None:
    """Make a history.jsonl agree with a resume checkpoint: its `phase` lines become `history` (an
    epoch logged but not checkpointed before a crash is trained again, so its line must go); other
    phases' lines are kept; a line torn by a kill mid-append is dropped."""
    path = Path(path)
    if not path.exists():
        return
    other = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a kill in the middle of append_jsonl
        if isinstance(record, dict) and record.get("phase") != phase:
            other.append(line)
    atomic_write_text(path, "".join(l + "\n" for l in other + [json.dumps(r) for r in history]))
