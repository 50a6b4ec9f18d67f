"""Shard writer: one document per line, ~10 MB files, published atomically per source."""

from __future__ import annotations

import re
from pathlib import Path

from ulmfit.fileio import Staged, make_dir

SHARD_BYTES = 10_000_000
SHARD_NAME = re.compile(r"^[a-z0-9-]+-\d{3}\.txt$")


class ShardWriter:
    """Writes `{source}-{k:03d}.txt` shards of about `max_bytes` each into `folder`.

    Shards are written to hidden temporary files and renamed into place by `commit()`, so a
    source that fails half-way (`abort()`) leaves no partial shards behind.
    """

    def __init__(self, folder: Path, source: str, max_bytes: int = SHARD_BYTES):
        self.folder, self.source, self.max_bytes = Path(folder), source, max_bytes
        make_dir(self.folder)
        self._staged: list[Staged] = []
        self._fh = None
        self._size = 0

    def _open_next(self) -> None:
        self._fh = Staged(self.folder / f"{self.source}-{len(self._staged):03d}.txt", "w")
        self._staged.append(self._fh)
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
        """Flush, fsync and publish the shards; returns their final paths."""
        final = [s.commit() for s in self._staged]
        self._staged, self._fh = [], None
        return final

    def abort(self) -> None:
        """Close and delete the unpublished shards."""
        for s in self._staged:
            s.abort()
        self._staged, self._fh = [], None


def clear_shards(folder: Path) -> None:
    """Remove shards (and stale temporaries) left by an earlier build; nothing else."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        # a stale temporary of fileio.Staged: ".{shard name}.{random}.tmp"
        name = p.name[1:].split(".txt.")[0] + ".txt" if p.name.startswith(".") and p.name.endswith(".tmp") else p.name
        if p.is_file() and SHARD_NAME.match(name):
            p.unlink()
