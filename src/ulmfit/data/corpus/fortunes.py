"""Fortune cookies from the Debian package `fortunes` (`/usr/share/games/fortunes/*`).

Entries are separated by lines holding only `%`. Skipped: the `off/` (offensive) folder, rot13
files, `.dat` indexes, `.u8` links (duplicates), `ascii-art` and the non-English `translate-me`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from .clean import normalize
from .fetch import apt_package

PACKAGE, VERSION = "fortunes", "1:1.99.1-7.3"
DATA = "usr/share/games/fortunes"
SKIP_FILES = {"ascii-art", "translate-me"}


def clean_fortunes(raw: str) -> Iterator[str]:
    """One fortune file -> one document per entry."""
    for entry in re.split(r"^%\s*$", raw.replace("\r\n", "\n"), flags=re.M):
        doc = normalize(entry)
        if doc:
            yield doc


def fortune_files(root: Path) -> list[Path]:
    """The readable fortune files under an extracted package tree, sorted."""
    folder = Path(root) / DATA
    keep = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if (p.is_symlink() or not p.is_file() or "off" in rel.parts[:-1]
                or p.suffix in (".dat", ".u8") or "rot" in p.name or p.name in SKIP_FILES):
            continue
        keep.append(p)
    return keep


def fetch(cache: Path) -> tuple[Path, str]:
    """The extracted package tree and the version used."""
    return apt_package(PACKAGE, VERSION, cache)


def read(root: Path) -> Iterator[str]:
    """Documents of the `fortunes` source."""
    for path in fortune_files(root):
        yield from clean_fortunes(path.read_text(encoding="utf-8", errors="replace"))
