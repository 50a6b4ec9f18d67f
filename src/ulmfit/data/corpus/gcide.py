"""GCIDE (Webster's 1913 and later additions) from the Debian package `dict-gcide`.

`/usr/share/dictd/gcide.dict.dz` is dictd's gzip-compatible format: entries start with an
unindented headword line after a blank line. Kept: definitions, notes and quotations as prose,
`Headword: definition. "Quotation."`. Dropped: pronunciations, etymologies and labels in
brackets, `Syn:` lists, quotation attributions, and blocks sourced only from WordNet (that text
is already in the `wordnet` source). Consecutive entries are joined into ~150-word documents.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Iterator

from .clean import batch, normalize
from .fetch import apt_package

PACKAGE, VERSION = "dict-gcide", "0.48.5+nmu2"
DATA = "usr/share/dictd/gcide.dict.dz"

_NAMED = {"ae": "ae", "oe": "oe", "AE": "Ae", "OE": "Oe", "imac": "i", "aum": "a", "eth": "th",
          "thorn": "th", "ng": "ng", "asl": "a", "add": "a", "udd": "u", "yogh": "y",
          "dsdot": "d", "root": "", "deg": " degrees", "sect": "section", "pounds": "pounds"}
_ACCENT = re.compile(r"\[(?:[=\-~^'`\".,*]?([a-z]{1,2})\^?|[=\-~^'`\".,*]([A-Z]))\]")
_NAMED_RE = re.compile(r"\[(" + "|".join(map(re.escape, _NAMED)) + r")\]")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_PRON = re.compile(r"\\[^\\\n]*\\")
_ATTRIB = re.compile(r"--\s?[A-Z][^\"\n{}]*?(?=\s+\"|\s*$)", re.M)
_LABEL = re.compile(r"\((?:[A-Z][a-z]*\.?(?:\s*(?:&|or|and|,)?\s*[A-Z][a-z]*\.?)*)\)")
_NUMBER = re.compile(r"^\s*(?:\d+\.|\([a-z]\))\s+", re.M)
_POS = r"(?:n|v|a|adj|adv|prep|pron|conj|interj|t|i|p|pr|imp|pl|sing|superl|compar)\."
_POS_ONLY = re.compile(rf"^[\s,]*(?:{_POS}\s*[,&]?\s*)+$", re.M)
_POS_LEAD = re.compile(rf"^[\s,]*(?:{_POS}\s*[,&]?\s*)*")
_SOURCE_TAG = re.compile(r"(\[(?:1913 Webster|Webster 1913[^\]]*|WordNet[^\]]*|PJC[^\]]*)\])[^\n]*")
_STRESSED = re.compile(r"\([^()]*\w[\"`*]\w[^()]*\)")   # pronunciations such as (ab`ar*tik"shun)
_ENTRY = re.compile(r"\n\s*\n(?=\S)")


def _curly(m: re.Match) -> str:
    return re.sub(r"[*\"`]", "", m.group(1))


def clean_entry(entry: str) -> str | None:
    """One dictionary entry -> `Headword: prose.` or None when nothing prose-like is left.

    Real entries have `\\pronunciation\\` markup on their unindented header lines; text without
    it (the dictd database notices, the GPL preamble) is skipped."""
    lines = entry.split("\n")
    n_head = next((i for i, ln in enumerate(lines) if ln[:1].isspace()), len(lines))
    head, body = " ".join(lines[:n_head]), "\n".join(lines[n_head:])
    headword = head.split("\\", 1)[0].strip().rstrip(",")
    if "\\" not in head or headword.startswith("00-") or not body.strip():
        return None
    # headwords and pronunciations all come before the header's last backslash
    rest = head.rsplit("\\", 1)[1]
    rest = re.sub(r"\([^()]*\)", " ", _ACCENT.sub(lambda m: m.group(1) or m.group(2), rest))
    body = _POS_LEAD.sub("", rest) + "\n" + body      # an etymology may start on line one
    body = _NAMED_RE.sub(lambda m: _NAMED[m.group(1)], _ACCENT.sub(lambda m: m.group(1) or m.group(2), body))
    kept = []
    for i, block in enumerate(re.split(r"\n\s*\n", body)):
        tags = re.findall(r"\[(1913 Webster|Webster 1913[^\]]*|WordNet[^\]]*|PJC[^\]]*|[A-Z]{2,4})\]", block)
        if tags and all(t.startswith("WordNet") for t in tags):
            continue
        if block.strip().startswith(("Syn:", "Syn.")):
            continue
        text = _STRESSED.sub(" ", _SOURCE_TAG.sub(r"\1", _PRON.sub(" ", block)))
        if i == 0:                                          # `(pro*nun"ci*a`tion), n.` line
            text = _POS_LEAD.sub("", text)
        for _ in range(3):                                  # nested etymology brackets
            text = _BRACKETS.sub(" ", text)
        text = _ATTRIB.sub(" ", text)
        text = re.sub(r"\{([^{}]*)\}", _curly, text)
        text = _NUMBER.sub(" ", _POS_ONLY.sub(" ", text))
        text = _LABEL.sub(" ", text)
        text = re.sub(r"^\s*Note:\s*", "", normalize(text.replace("--", " -- ")))
        text = re.sub(r"^[,.;:\s-]+|\s+(?=[,.;:])", "", text).strip()
        if text.startswith(("Also,", ",")) or len(text.split()) < 2:
            continue
        kept.append(text)
    if not kept:
        return None
    text = re.sub(r"(?<=\w)[*\"`](?=\w)", "", " ".join(kept))   # Af*flict"ing*ly
    return normalize(f"{headword}: {text}")


def clean_gcide(raw: str, doc_words: int = 150) -> Iterator[str]:
    """The whole dictionary text -> documents of batched entries."""
    raw = raw.replace("\r\n", "\n")
    entries = (clean_entry(e.strip("\n")) for e in _ENTRY.split("\n" + raw))
    yield from batch((e for e in entries if e), min_words=doc_words)


def fetch(cache: Path) -> tuple[Path, str]:
    """The extracted package tree and the version used."""
    return apt_package(PACKAGE, VERSION, cache)


def read(root: Path) -> Iterator[str]:
    """Documents of the `gcide` source."""
    with gzip.open(Path(root) / DATA) as fh:
        raw = fh.read().decode("utf-8", "replace")
    yield from clean_gcide(raw)
