"""The one way ulmfit writes files: atomically, with every OS error turned into one clear line.

Every write goes to a hidden temporary file in the destination's folder, is flushed and fsync'ed,
and is then renamed over the destination with ``os.replace`` (atomic on POSIX and Windows). A crash
or an exception mid-write leaves either the old file or the new one, never a truncated one.

Any ``OSError`` while writing (a read-only disk, a full disk, a path under a file, a path that is a
folder, a dangling symbolic link, no permission, a name too long) becomes a
:class:`~ulmfit.errors.UlmfitError` naming the path, the cause and the fix (:func:`os_error`).

Importable from every layer (it needs only the standard library, NumPy and ``ulmfit.errors``);
tensors are written through :func:`atomic_write_bytes` by ``train/checkpoint.py``.

In a data-parallel run (``torchrun``, ``train/distributed.py``) only rank 0 writes: on the other
ranks (:func:`is_main_process` false) the writers, the append, :func:`remove`, the write lock and the
swap do nothing, so N processes running the same recipe leave one set of files.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ulmfit.errors import UlmfitError
from ulmfit.ranks import is_main as is_main_process

_UMASK = os.umask(0)
os.umask(_UMASK)

# errno -> (cause, fix); the fix is said in words a user can act on.
_CAUSES = {
    errno.EROFS: ("the file system is read-only", "write to a writable folder (pass another --out)"),
    errno.EACCES: ("permission denied", "pick a folder you may write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "pick a folder you may write to, or fix its permissions"),
    errno.ENOSPC: ("no space left on the device", "free some disk space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "pass a path whose parent folders are folders"),
    errno.EISDIR: ("it is a folder", "pass a file name, not a folder"),
    errno.EEXIST: ("a file of that name exists where a folder is needed", "remove that file or pass another path"),
    errno.ENAMETOOLONG: ("the name is too long", "pass a shorter path"),
    errno.EMFILE: ("too many open files", "close other programs or raise the open-file limit"),
    errno.EIO: ("an input/output error on the device", "check the disk, then try again"),
}


def _dangling_link(path: Path) -> Path | None:
    """The first dangling symbolic link on `path` or its parents, if any."""
    for p in (path, *path.parents):
        if os.path.islink(p) and not os.path.exists(p):
            return p
    return None


def _file_in_the_way(path: Path) -> Path | None:
    """The path itself or the first parent that exists but is not a folder."""
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            return p
    return None


def os_error(e: OSError, path: str | os.PathLike | None = None, doing: str = "write") -> UlmfitError:
    """One line for an OS error: the path, the cause and the fix (raise the result)."""
    path = Path(path if path is not None else (e.filename or "?"))
    link = _dangling_link(path)
    if link is not None:
        cause, fix = (f"{link} is a symbolic link to {os.readlink(link)}, which does not exist",
                      "point the link at an existing folder or pass another path")
    elif e.errno in (errno.EEXIST, errno.ENOTDIR) and (blocker := _file_in_the_way(path)) is not None:
        cause = "it is a file, not a folder" if blocker == path else f"{blocker} is a file, not a folder"
        fix = "pass a folder path (or remove the file)"
    else:
        cause, fix = _CAUSES.get(e.errno, (e.strerror or str(e), "check the path and try again"))
    return UlmfitError(f"cannot {doing} {path}: {cause}; {fix}")


@contextlib.contextmanager
def mapped(path: str | os.PathLike, doing: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`os_error` for `path`."""
    try:
        yield
    except OSError as e:
        raise os_error(e, path, doing) from None


def make_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p`` that explains itself: a path under a file, a file, a dangling link, read-only."""
    path = Path(path)
    if path.is_dir():
        return path
    with mapped(path, "create the folder"):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort; not possible on every OS / file system)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Staged:
    """A file being written to a temporary name beside `path`; :meth:`commit` renames it into place,
    :meth:`abort` deletes it. For writers that publish several files together (corpus shards)."""

    def __init__(self, path: str | os.PathLike, mode: str = "wb"):
        self.path = Path(path)
        with mapped(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise os_error(IsADirectoryError(errno.EISDIR, "is a directory"), self.path)
        with mapped(self.path):
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        self.file: IO = os.fdopen(fd, mode, **kwargs)

    def write(self, data) -> None:
        with mapped(self.path):
            self.file.write(data)

    def commit(self) -> Path:
        try:
            with mapped(self.path):
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                os.chmod(self.tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
                os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a temp file next to ``path``; on success fsync it and rename it over ``path``,
    on any exception delete it and leave ``path`` untouched."""
    if not is_main_process():  # [distributed] ranks > 0 write nothing
        yield io.BytesIO() if "b" in mode else io.StringIO()
        return
    staged = Staged(path, mode)
    try:
        with mapped(path):
            yield staged.file
    except BaseException:
        staged.abort()
        raise
    staged.commit()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_file(path, "w") as f:
        f.write(text)


def json_default(obj: Any) -> Any:
    """JSON for numpy scalars/arrays, tensors, paths and sets."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (indented, trailing newline) atomically. The JSON is built before the
    file is touched, so an unserialisable object leaves the old file intact."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=json_default) + "\n"
    atomic_write_text(path, text)


def atomic_write_npy(path: str | os.PathLike, array) -> None:
    """``np.save`` atomically (the array is serialised in memory first)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one JSON line to ``path`` and fsync, so a crash loses at most the
    line being written."""
    if not is_main_process():  # [distributed] ranks > 0 write nothing
        return
    line = json.dumps(record, ensure_ascii=False, default=json_default) + "\n"
    path = Path(path)
    make_dir(path.parent)
    with mapped(path):
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def remove(path: str | os.PathLike) -> None:
    """Delete the file ``path`` if it is there. Like the writers, only rank 0 does: a file rank 0
    wrote is rank 0's to remove, and only after a barrier past the other ranks' last read of it."""
    if not is_main_process():  # [distributed] ranks > 0 remove nothing
        return
    with mapped(path, "remove"):
        Path(path).unlink(missing_ok=True)


# --- one writer per folder, and replacing a folder whole ------------------------------------------

def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def staging_path(folder: str | os.PathLike) -> Path:
    """Where a folder's replacement is built (beside it, so the final rename stays on one disk)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.staging"


def _old_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.old"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def write_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the write lock of `folder` (an O_EXCL file beside it holding pid, host and time).

    A second writer gets one line naming the holder. A lock left by a killed process (same host,
    pid no longer running) is stale and taken over. Released on exit, also on an exception.
    """
    import socket
    import time

    folder = Path(folder)
    path = lock_path(folder)
    if not is_main_process():  # [distributed] rank 0 holds the lock for the whole run
        yield path
        return
    make_dir(folder.parent)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(3):
        try:
            with mapped(path, "lock"):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except UlmfitError:
            if not path.exists():
                raise
            try:
                holder = json.loads(path.read_text())
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid, host = {}, None, None
            if pid is not None and host == me["host"] and not _pid_alive(pid) or pid is None and _older_than(path, 60):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its writer died (or the lock file is unreadable and old)
                continue
            raise UlmfitError(f"{folder} is being written by another ulmfit process (pid {holder.get('pid', '?')} "
                              f"on {holder.get('host', '?')} since {holder.get('since', '?')}); wait for it to finish, "
                              f"or if that process is gone delete {path}") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise UlmfitError(f"cannot lock {folder}: {path} keeps reappearing; another process is starting to write it")
    try:
        recover_swap(folder)
        yield path
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()


def _older_than(path: Path, seconds: float) -> bool:
    import time

    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return True


def recover_swap(folder: str | os.PathLike, marker: str = "ulmfit.json") -> None:
    """Finish or undo a :func:`swap_in` that a crash cut between its two renames: when the new
    folder is complete (holds `marker`) it goes in, otherwise the old folder is put back."""
    folder = Path(folder)
    old, staging = _old_path(folder), staging_path(folder)
    if not old.exists() or not is_main_process():  # [distributed] only rank 0 moves folders
        return
    import shutil

    with mapped(folder, "recover"):
        if not folder.exists():
            os.replace(staging if (staging / marker).exists() else old, folder)
        if old.exists():
            shutil.rmtree(old)


def swap_in(staging: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Replace `folder` by the complete folder `staging` (beside it): two renames, then the old one
    is deleted. A reader sees the old folder, then the new one; a crash in between is repaired by
    :func:`recover_swap` (run by the next :func:`write_lock`)."""
    import shutil

    if not is_main_process():  # [distributed] only rank 0 moves folders
        return
    staging, folder = Path(staging), Path(folder)
    old = _old_path(folder)
    with mapped(folder, "replace"):
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        _fsync_dir(folder.parent)
        if old.exists():
            shutil.rmtree(old)
