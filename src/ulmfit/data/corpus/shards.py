"""Shard writer: one document per line, ~10 MB files, published atomically per source."""

from __future__ import annotations

import os
import re
from pathlib import Path

SHARD_BYTES = 10_000_000
SHARD_NAME = re.compile(r"^[a-z0-9-]+-\d{3}\.txt$")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class ShardWriter:
    """Writes `{source}-{k:03d}.txt` shards of about `max_bytes` each into `folder`.

    Shards are written to hidden temporary files and renamed into place by `commit()`, so a
    source that fails half-way (`abort()`) leaves no partial shards behind.
    """

    def __init__(self, folder: Path, source: str, max_bytes: int = SHARD_BYTES):
        self.folder, self.source, self.max_bytes = Path(folder), source, max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tmp: list[Path] = []
        self._fh = None
        self._size = 0

    def _open_next(self) -> None:
        if self._fh:
            self._fh.close()
        tmp = self.folder / f".{self.source}-{len(self._tmp):03d}.txt.tmp"
        self._tmp.append(tmp)
        self._fh = open(tmp, "w", encoding="utf-8", newline="\n")
        self._size = 0

    def write(self, doc: str) -> None:
        """Append one document (must not contain a newline)."""
        line = doc.replace("\n", " ") + "\n"
        n = len(line.encode("utf-8"))
        if self._fh is None or (self._size and self._size + n > self.max_bytes):
            self._open_next()
        self._fh.write(line)
        self._size += n

    def commit(self) -> list[Path]:
        """Close and publish the shards; returns their final paths."""
        if self._fh:
            self._fh.close()
            self._fh = None
        final = []
        for tmp in self._tmp:
            dest = tmp.with_name(tmp.name[1:-len(".tmp")])
            os.replace(tmp, dest)
            final.append(dest)
        self._tmp = []
        return final

    def abort(self) -> None:
        """Close and delete the unpublished shards."""
        if self._fh:
            self._fh.close()
            self._fh = None
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)
        self._tmp = []


def clear_shards(folder: Path) -> None:
    """Remove shards (and stale temporaries) left by an earlier build; nothing else."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        name = p.name[1:-4] if p.name.startswith(".") and p.name.endswith(".tmp") else p.name
        if p.is_file() and SHARD_NAME.match(name):
            p.unlink()
