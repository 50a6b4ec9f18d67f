"""Text helpers shared by every source: whitespace, boilerplate filters, dedup keys, batching.

A corpus *document* is one line of a shard. Paragraphs inside a document are joined with a single
space: the language-model loader streams documents with BOS/EOS between them and the tokenizer has
no paragraph token, so a newline inside a document would carry no information anyway.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterable, Iterator

MIN_WORDS = 5          # shorter documents are dropped (headings, one-word fortunes)
MIN_ALPHA = 0.6        # share of letters among non-space characters (drops ASCII art, tables)

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                         "\ufeff": "", "\u00a0": " ", "\u00ad": ""})
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WS = re.compile(r"\s+")
_BOILERPLATE = re.compile(r"project gutenberg|gutenberg\.org|all rights reserved", re.I)


def normalize(text: str) -> str:
    """One line of plain text: NFC, ASCII quotes, no control characters, single spaces."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = _CTRL.sub(" ", text)
    return _WS.sub(" ", text).strip()


def paragraphs(text: str) -> list[str]:
    """Split text at blank lines into normalised, non-empty paragraphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [p for p in (normalize(b) for b in re.split(r"\n[ \t]*\n", text)) if p]


def keep(doc: str) -> str | None:
    """Why a normalised document is dropped (`"short"`, `"boilerplate"`), or None to keep it."""
    if len(doc.split()) < MIN_WORDS:
        return "short"
    visible = [c for c in doc if not c.isspace()]
    if sum(c.isalpha() for c in visible) < MIN_ALPHA * len(visible):
        return "boilerplate"
    if _BOILERPLATE.search(doc):
        return "boilerplate"
    return None


def doc_key(doc: str) -> bytes:
    """Dedup key: 16-byte hash of the case-folded, whitespace-normalised document."""
    return hashlib.blake2b(normalize(doc).casefold().encode("utf-8"), digest_size=16).digest()


def batch(pieces: Iterable[str], min_words: int = 150) -> Iterator[str]:
    """Join consecutive short pieces (glosses, entries, paragraphs) into documents of
    at least `min_words` whitespace words; the last batch may be shorter."""
    buf: list[str] = []
    n = 0
    for piece in pieces:
        buf.append(piece)
        n += len(piece.split())
        if n >= min_words:
            yield " ".join(buf)
            buf, n = [], 0
    if buf:
        yield " ".join(buf)


_GUT_START = re.compile(r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUT_END = re.compile(r"^\s*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project "
                      r"Gutenberg'?s?)", re.I | re.M)


def strip_gutenberg(text: str) -> str:
    """Remove a Project Gutenberg header (up to the `*** START OF ...` line) and footer
    (from `*** END OF ...` / `End of Project Gutenberg's ...`), when present."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    start = _GUT_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUT_END.search(text)
    if end:
        text = text[:end.start()]
    return text
