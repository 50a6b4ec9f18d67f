"""Crash-safe file writes and safetensors weights.

Every write goes to a temporary file in the destination's folder, is flushed and fsync'ed, and
then renamed over the destination with ``os.replace`` (atomic on POSIX and Windows). A crash or
an exception mid-write therefore leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ulmfit.errors import UlmfitError

ALIAS_KEY = "ulmfit_aliases"  # safetensors metadata: JSON {alias_name: stored_name}

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort; not possible on every OS / file system)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a temp file next to ``path``; on success fsync it and rename it over ``path``,
    on any exception delete it and leave ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with _atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with _atomic_file(path, "w") as f:
        f.write(text)


def _json_default(obj: Any) -> Any:
    """JSON for numpy scalars/arrays, tensors, paths and sets."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (indent 2, trailing newline) atomically. The JSON is built
    before the file is touched, so an unserialisable object leaves the old file intact."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically: a pickling error or a crash keeps the old file."""
    with _atomic_file(path, "wb") as f:
        torch.save(obj, f)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one JSON line to ``path`` and fsync, so a crash loses at most the
    line being written."""
    line = json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


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
