"""Read labeled or unlabeled text from .csv/.tsv/.jsonl/.txt files or a folder-per-class layout.

Every problem a user can fix raises `UlmfitError` with one line naming the file, the place in it
and what to do. Places are 1-based *lines* as an editor shows them (a CSV header is line 1), with
the data *row* (1-based, header not counted) next to them where the two differ.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ulmfit.errors import UlmfitError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".txt")
ON_EMPTY = ("error", "skip", "keep")
MAX_NAMED = 5  # places named in one error message


@dataclass
class TextTable:
    texts: list[str]
    labels: list[str] | None
    source: str


@dataclass
class _Records:
    """What a format parser hands back: columns of strings, and where record i lives in the file."""

    columns: dict[str, list[str]]
    n: int
    where: Callable[[int], str]  # e.g. "line 4 (row 3)" or "pos/a.txt"; only called for messages


def read_table(path, text_col: str = "text", label_col: str | None = None,
               encoding: str = "utf-8", on_empty: str = "error") -> TextTable:
    """Read texts (and labels when `label_col` is given; always for a folder-per-class layout).

    on_empty: what to do with empty or whitespace-only texts: "error" (default), "skip" (drop them
    and their labels) or "keep".
    """
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, not {on_empty!r}")
    path = Path(path)
    if not path.exists():
        raise UlmfitError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        recs = _read_class_folders(path, encoding)
        text_col, label_col = "text", "label"
    else:
        recs = _read_file(path, encoding, label_col)
    if recs.n == 0:
        raise UlmfitError(f"{path}: the file has no rows; give a file with one document per row")

    texts = _column(recs, text_col, path)
    labels = _column(recs, label_col, path) if label_col is not None else None
    rec = list(range(recs.n))  # record number of each kept text

    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty and on_empty == "error":
        raise UlmfitError(f"{path}: {len(empty)} empty text(s) in '{text_col}' at {_name(recs, empty)}; "
                          "remove those rows (or pass on_empty='skip' to drop them)")
    if empty and on_empty == "skip":
        drop = set(empty)
        rec = [i for i in rec if i not in drop]
        texts = [texts[i] for i in rec]
        labels = [labels[i] for i in rec] if labels is not None else None

    if labels is not None:
        labels = [lab.strip() for lab in labels]
        missing = [i for i, lab in enumerate(labels) if not lab]
        if missing:
            raise UlmfitError(f"{path}: {len(missing)} missing label(s) in '{label_col}' at "
                              f"{_name(recs, [rec[i] for i in missing])}; fill them in or remove those rows")
    return TextTable(texts=texts, labels=labels, source=str(path))


def read_texts(path, text_col: str = "text", encoding: str = "utf-8") -> list[str]:
    """Unlabeled texts from any supported format; empty texts (blank .txt lines) are skipped.

    A folder is read recursively: every `*.txt` file under it is one document.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise UlmfitError(f"{path}: no .txt files in this folder; put one document per .txt file")
        texts = [_decode(f.read_bytes(), encoding, f) for f in files]
        return [t for t in texts if t.strip()]
    return read_table(path, text_col=text_col, encoding=encoding, on_empty="skip").texts


# --- formats -------------------------------------------------------------------------------------

def _read_file(path: Path, encoding: str, label_col: str | None) -> _Records:
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UlmfitError(f"{path}: unsupported file type '{path.suffix}'; use one of "
                          f"{', '.join(TABLE_SUFFIXES)} or a folder with one subfolder per label")
    text = _decode(path.read_bytes(), encoding, path)
    if not text.strip():
        raise UlmfitError(f"{path}: the file is empty; give a file with one document per row")
    if suffix in (".csv", ".tsv"):
        return _parse_delimited(text, path, sep="," if suffix == ".csv" else "\t")
    if suffix in (".jsonl", ".ndjson"):
        return _parse_jsonl(text, path)
    if label_col is not None:
        raise UlmfitError(f"{path}: a .txt file holds one text per line and no labels; "
                          f"drop label_col={label_col!r} or use a .csv/.jsonl file or class folders")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another document
    return _Records({"text": [ln.rstrip("\r") for ln in lines]}, len(lines), lambda i: f"line {i + 1}")


def _parse_delimited(text: str, path: Path, sep: str) -> _Records:
    """CSV keeps standard quoting; TSV is read without quoting (a `"` in a tweet is just a character)."""
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                         skip_blank_lines=False,
                         quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL)
    except pd.errors.EmptyDataError:
        raise UlmfitError(f"{path}: the file is empty; give a file with a header and one document per row") from None
    except pd.errors.ParserError as e:
        msg = str(e).strip().splitlines()[-1]
        raise UlmfitError(f"{path}: cannot parse as {'CSV' if sep == ',' else 'TSV'} ({msg}); "
                          "check the quoting and the number of fields per row") from None
    df = df.fillna("")
    df.columns = [str(c).strip() for c in df.columns]
    # Quoted fields may span lines: count their newlines so the line numbers stay true.
    columns = {c: df[c].tolist() for c in df.columns}

    def where(i: int) -> str:
        extra = sum(int(df[c].iloc[:i].str.count("\n").sum()) for c in df.columns) if i else 0
        return f"line {i + 2 + extra} (row {i + 1})"
    return _Records(columns, len(df), where)


def _parse_jsonl(text: str, path: Path) -> _Records:
    rows, lines = [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UlmfitError(f"{path}: line {lineno} is not valid JSON ({e.msg} at column {e.colno}); "
                              "fix that line (each line must be one JSON object)") from None
        if not isinstance(obj, dict):
            raise UlmfitError(f"{path}: line {lineno} is a JSON {type(obj).__name__}, not an object; "
                              'write each line as {"text": ..., "label": ...}')
        rows.append(obj)
        lines.append(lineno)
    names = list(dict.fromkeys(k for r in rows for k in r))  # keys in order of first appearance
    columns = {k: [_as_str(r.get(k)) for r in rows] for k in names}
    return _Records(columns, len(rows), lambda i: f"line {lines[i]} (row {i + 1})")


def _read_class_folders(path: Path, encoding: str) -> _Records:
    """`path/<label>/*.txt`: each file is one document, the folder name is its label."""
    texts, labels, places = [], [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in sub.glob("*.txt") if p.is_file()):
            texts.append(_decode(f.read_bytes(), encoding, f))
            labels.append(sub.name)
            places.append(str(f.relative_to(path)))
    if not texts:
        raise UlmfitError(f"{path}: no documents found; a folder must hold one subfolder per label "
                          "with one .txt file per document (e.g. pos/1.txt, neg/2.txt)")
    return _Records({"text": texts, "label": labels}, len(texts), places.__getitem__)


# --- helpers -------------------------------------------------------------------------------------

def _decode(raw: bytes, encoding: str, path: Path) -> str:
    """Decode the whole file; a bad byte is reported by offset and line. A UTF-8 BOM is dropped."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(codec)
    except LookupError:
        raise UlmfitError(f"{path}: unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UlmfitError(f"{path}: byte 0x{raw[e.start]:02x} at byte offset {e.start} (line {line}) is not "
                          f"valid {encoding}; pass --encoding latin-1 (or the file's real encoding)") from None


def _column(recs: _Records, name: str, path: Path) -> list[str]:
    if name in recs.columns:
        return recs.columns[name]
    available = list(recs.columns)
    lower = {c.lower(): c for c in available}
    close = [lower[name.lower()]] if name.lower() in lower else difflib.get_close_matches(name, available, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UlmfitError(f"{path}: no column '{name}' (columns: {', '.join(map(repr, available))}); "
                      f"{hint}pass the right column name")


def _name(recs: _Records, idx: list[int]) -> str:
    named = ", ".join(recs.where(i) for i in idx[:MAX_NAMED])
    return named + (f" and {len(idx) - MAX_NAMED} more" if len(idx) > MAX_NAMED else "")


def _as_str(v) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
