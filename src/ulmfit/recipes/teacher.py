"""A teacher's class probabilities for every text of a distillation run, cached on disk.

Any model folder that `ulmfit.load(DIR)` returns with `predict_proba(texts)` and `classes` is a
teacher (an fwd+bwd AWD-LSTM folder, a transformer, an ensemble). The pass goes through the texts
in chunks of `chunk_size`; each finished chunk is written into a memory-mapped float32 .npy and
then recorded in a JSON beside it, so

- memory stays flat in the number of texts (one chunk of texts and probabilities at a time);
- an interrupted pass resumes from the last finished chunk (a chunk cut short is computed again);
- a stale cache is detected: the JSON names the teacher folder, a hash of its content, the number
  of texts, a hash of the texts and the class order; a cache whose hashes, counts or classes differ
  is computed again from the start, saying why (a teacher moved to another path with the same
  files is the same teacher).

```
CACHE/teacher_probs.npy    float32 [n_texts, n_classes], columns in the run's class order
CACHE/teacher_probs.json   {teacher, teacher_hash, n_texts, texts_hash, classes, chunk_size, done_chunks}
```
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json, make_dir, mapped
from ulmfit.train.progress import Heartbeat

Log = Callable[[str], None]
LOG_EVERY_S = 30.0  # without a terminal: one progress line this often
# Files of a model folder that do not change its predictions (logs, plots, reports, resume state).
NOT_HASHED = {"history.jsonl", "history.png", "lm_history.png", "report.md", "valid_metrics.json"}
NOT_HASHED_DIRS = {"checkpoints", "teacher"}


def folder_hash(folder: Path) -> str:
    """sha256 over the relative path and content of every file that defines the model's predictions."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or p.name in NOT_HASHED or rel.parts[0] in NOT_HASHED_DIRS or p.name.startswith("."):
            continue
        h.update(str(rel.as_posix()).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 over the texts, each length-prefixed (so ["ab", "c"] and ["a", "bc"] differ)."""
    h = hashlib.sha256()
    for t in texts:
        b = str(t).encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def _load_model(folder: Path):
    from ulmfit.recipes.predictor import BUILD_PRECISION, load

    return load(folder, precision=BUILD_PRECISION)  # soft targets are training data: the same on every CPU


def teacher_probabilities(teacher_dir: str | Path, texts: Sequence[str], cache: Path, classes: list[str], *,
                          chunk_size: int = 1024, bs: int = 128, load: Callable | None = None,
                          progress: bool | None = None, log: Log = lambda m: None) -> np.ndarray:
    """The teacher's probabilities [len(texts), len(classes)] (read-only memory map), columns in
    `classes` order; computed chunk by chunk into `cache`, reusing whatever a valid cache holds.
    `load(folder)` returns the teacher (default `_load_model`, looked up at call time: `ulmfit.load`);
    it is called only if chunks remain."""
    teacher_dir, cache = Path(teacher_dir), Path(cache)
    arr_path, meta_path = cache / "teacher_probs.npy", cache / "teacher_probs.json"
    n = len(texts)
    want = {"teacher": str(teacher_dir.resolve()), "teacher_hash": folder_hash(teacher_dir), "n_texts": n,
            "texts_hash": texts_hash(texts), "classes": list(classes), "chunk_size": chunk_size}
    n_chunks = math.ceil(n / chunk_size)
    done = _done_chunks(meta_path, arr_path, want, log)
    if done >= n_chunks:
        if n_chunks:
            log(f"teacher probabilities: all {n:,} texts from the cache {cache}")
        return np.load(arr_path, mmap_mode="r") if n else np.zeros((0, len(classes)), np.float32)
    teacher = (load or _load_model)(teacher_dir)
    cols = _column_map(teacher, classes, teacher_dir)
    make_dir(cache)
    with mapped(arr_path):  # a full disk or a read-only folder: one line, not a traceback
        if done == 0:
            arr = np.lib.format.open_memmap(arr_path, mode="w+", dtype=np.float32, shape=(n, len(classes)))
            atomic_write_json(meta_path, {**want, "done_chunks": 0})
        else:
            arr = np.load(arr_path, mmap_mode="r+")
        log(f"teacher probabilities: resuming at text {done * chunk_size:,} of {n:,} ({done} of {n_chunks} chunks cached)")
    pass_bs = {"bs": bs} if "bs" in inspect.signature(teacher.predict_proba).parameters else {}
    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=n, initial=done * chunk_size, desc="teacher", unit="text", disable=not show_bar,
               dynamic_ncols=True)
    beat = Heartbeat("teacher probabilities", n, None if show_bar else LOG_EVERY_S, unit="text", rate_unit="texts",
                     say=log, start=done * chunk_size)
    for c in range(done, n_chunks):
        a, b = c * chunk_size, min(n, (c + 1) * chunk_size)
        probs = np.asarray(teacher.predict_proba(list(texts[a:b]), **pass_bs), dtype=np.float32)
        if probs.shape != (b - a, len(cols)):
            raise UlmfitError(f"{teacher_dir}: the teacher returned probabilities of shape {probs.shape} for "
                              f"{b - a} texts and {len(cols)} classes")
        with mapped(arr_path):
            arr[a:b] = probs[:, cols]
            arr.flush()
        atomic_write_json(meta_path, {**want, "done_chunks": c + 1})  # after the data: a cut chunk is redone
        bar.update(b - a)
        beat.update(b, None, b - beat.start)
    bar.close()
    del arr
    return np.load(arr_path, mmap_mode="r")


def _done_chunks(meta_path: Path, arr_path: Path, want: dict, log: Log) -> int:
    """How many chunks a cache that matches `want` holds; 0 (saying why) for a missing or stale one."""
    if not meta_path.exists():
        return 0
    try:
        have = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        log(f"teacher cache {meta_path} unreadable: computing the teacher's probabilities again")
        return 0
    # the folder's path is recorded but not compared: a moved or copied teacher with the same files is the same teacher
    stale = [k for k in want if k != "teacher" and have.get(k) != want[k]]
    if stale:
        why = {"teacher_hash": "another teacher, or the teacher's files changed",
               "n_texts": "another number of texts", "texts_hash": "other texts", "classes": "other classes",
               "chunk_size": "another chunk size"}
        log(f"teacher cache {meta_path.parent} is stale ({'; '.join(why[k] for k in stale)}): computing it again")
        return 0
    if not arr_path.exists():
        return 0
    try:
        arr = np.load(arr_path, mmap_mode="r")
    except (OSError, ValueError):
        return 0
    if arr.shape != (want["n_texts"], len(want["classes"])) or arr.dtype != np.float32:
        return 0
    return int(have.get("done_chunks", 0))


def _column_map(teacher, classes: list[str], teacher_dir: Path) -> list[int]:
    """Column of each of the run's classes in the teacher's output; the class sets must be equal."""
    t_classes = [str(c) for c in getattr(teacher, "classes", [])]
    if sorted(t_classes) != sorted(classes):
        raise UlmfitError(f"{teacher_dir}: the teacher predicts classes {t_classes} but the training data has "
                          f"{list(classes)}; distill from a teacher trained on the same labels")
    return [t_classes.index(c) for c in classes]
