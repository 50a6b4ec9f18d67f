"""WordNet 3.0 glosses from the Debian package `wordnet-base`.

Each synset line of `data.{noun,verb,adj,adv}` becomes `lemma, lemma: gloss.`; consecutive glosses
(neighbours in the file, so related senses) are joined into documents of about 150 words.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from .clean import batch, normalize
from .fetch import apt_package

PACKAGE, VERSION = "wordnet-base", "1:3.0-37"
DATA = "usr/share/wordnet"
PARTS = ("noun", "verb", "adj", "adv")
_MARKER = re.compile(r"\((?:a|p|ip)\)$")   # adjective position markers on lemmas


def gloss(line: str) -> str | None:
    """One data-file line -> `lemma, lemma: gloss.`; None for licence header lines."""
    if line.startswith("  ") or "|" not in line:
        return None
    head, text = line.split("|", 1)
    fields = head.split()
    try:
        n_words = int(fields[3], 16)
        lemmas = [_MARKER.sub("", w).replace("_", " ") for w in fields[4:4 + 2 * n_words:2]]
    except (IndexError, ValueError):
        return None
    text = normalize(re.sub(r"`([^'`]*)'", r"'\1'", text))
    if not text:
        return None
    if text[-1] not in '.!?"':
        text += "."
    return f"{', '.join(dict.fromkeys(lemmas[:3]))}: {text}"


def clean_wordnet(raw: str, doc_words: int = 150) -> Iterator[str]:
    """One `data.*` file -> documents of batched glosses."""
    glosses = (g for g in map(gloss, raw.splitlines()) if g)
    yield from batch(glosses, min_words=doc_words)


def fetch(cache: Path) -> tuple[Path, str]:
    """The extracted package tree and the version used."""
    return apt_package(PACKAGE, VERSION, cache)


def read(root: Path) -> Iterator[str]:
    """Documents of the `wordnet` source."""
    for part in PARTS:
        path = Path(root) / DATA / f"data.{part}"
        yield from clean_wordnet(path.read_text(encoding="utf-8", errors="replace"))
