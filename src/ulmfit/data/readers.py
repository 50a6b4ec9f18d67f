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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ulmfit.errors import UlmfitError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a document may be longer than the csv module's 128 KiB default

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".txt")
ON_EMPTY = ("error", "skip", "keep")
MAX_NAMED = 5  # places named in one error message
MISSING_LABELS = ("nan", "-nan", "inf", "-inf", "infinity", "-infinity")  # float artefacts, never a class name


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
    # JSONL: per column, the first record whose value is a JSON array or object (read as "") and its kind:
    # refused when the column is read as the texts or the labels (`_column`), unused otherwise
    nested: dict[str, tuple[int, str]] = field(default_factory=dict)


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
        # "nan" is what a missing value turns into on its way through pandas or float(); never a class
        missing = [i for i, lab in enumerate(labels) if not lab or lab.lower() in MISSING_LABELS]
        if missing:
            raise UlmfitError(f"{path}: {len(missing)} missing label(s) (empty or NaN) in '{label_col}' at "
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


def iter_text_chunks(path, text_col: str = "text", encoding: str = "utf-8",
                     rows: int = 1000) -> Iterator[list[str]]:
    """The texts of a .csv/.tsv/.jsonl/.txt file (None or "-": stdin, one text per line), `rows` at a
    time, in file order, empty texts kept (bulk prediction: one output row per input row). Only one
    chunk is in memory at a time, so a file of any size streams through."""
    if rows < 1:
        raise UlmfitError(f"chunk size must be positive, not {rows}")
    if path is None or str(path) == "-":
        yield from _line_chunks(sys.stdin, rows)
        return
    path = Path(path)
    if not path.is_file():
        raise UlmfitError(f"{path}: no such file; check the path (bulk prediction reads one "
                          f"{'/'.join(TABLE_SUFFIXES)} file)")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UlmfitError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(TABLE_SUFFIXES)}")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        with open(path, encoding=codec, newline="\n") as f:
            if suffix == ".txt":
                yield from _line_chunks(f, rows)
            elif suffix in (".jsonl", ".ndjson"):
                yield from _jsonl_chunks(f, path, text_col, rows)
            else:
                yield from _delimited_chunks(f, path, text_col, rows, sep="," if suffix == ".csv" else "\t")
    except LookupError:
        raise UlmfitError(f"{path}: unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from None
    except UnicodeDecodeError as e:
        raise UlmfitError(f"{path}: bytes that are not valid {encoding} ({e.reason}); pass --encoding latin-1 "
                          f"(or the file's real encoding)") from None


def _line_chunks(f, rows: int) -> Iterator[list[str]]:
    chunk = []
    for line in f:
        chunk.append((line[:-1] if line.endswith("\n") else line).rstrip("\r"))
        if len(chunk) == rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_object(line: str, lineno: int, path: Path) -> dict:
    """One JSONL line as an object, or one line saying what is wrong with it (both JSONL readers)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UlmfitError(f"{path}: line {lineno} is not valid JSON ({e.msg} at column {e.colno}); "
                          "fix that line (each line must be one JSON object)") from None
    except RecursionError:
        raise UlmfitError(f"{path}: line {lineno} is nested too deeply to read; "
                          'write each line as a flat object {"text": ..., "label": ...}') from None
    if not isinstance(obj, dict):
        raise UlmfitError(f"{path}: line {lineno} is a JSON {type(obj).__name__}, not an object; "
                          'write each line as {"text": ..., "label": ...}')
    return obj


def _field(obj: dict, key: str, lineno: int, path: Path) -> str:
    """One field of a JSONL object that is read as text or a label, as a string (absent: empty)."""
    v = obj.get(key)
    if kind := _nested_kind(v):
        raise _nested_error(path, f"line {lineno}", key, kind)
    return _as_str(v)


def _nested_kind(v) -> str | None:
    """"array" or "object" for a nested JSON value, else None."""
    return "array" if isinstance(v, list) else "object" if isinstance(v, dict) else None


def _nested_error(path: Path, where: str, key: str, kind: str) -> UlmfitError:
    """A text or label given as a JSON array or object: never read as its JSON source (a list of tokens
    would become '["a", "b"]', brackets and quotes included, and train without a word of warning)."""
    return UlmfitError(f"{path}: {where}: field {key!r} is a nested JSON {kind}, not text; give it as one string "
                       f"or a number (a list of tokens or sentences: join it into one text first)")


def _jsonl_chunks(f, path: Path, text_col: str, rows: int) -> Iterator[list[str]]:
    chunk, seen = [], False
    for lineno, line in enumerate(f, start=1):
        if not line.strip():
            continue
        obj = _json_object(line, lineno, path)
        seen = seen or text_col in obj
        chunk.append(_field(obj, text_col, lineno, path))
        if len(chunk) == rows:
            if not seen:
                _column(_Records({k: [] for k in obj}, 0, str), text_col, path)
            yield chunk
            chunk = []
    if chunk and not seen:
        _column(_Records({k: [] for k in obj}, 0, str), text_col, path)
    if chunk:
        yield chunk


_CR = "\ufdd0"  # a noncharacter standing for a bare carriage return inside a text while csv reads the line


def _delimited_chunks(f, path: Path, text_col: str, rows: int, sep: str) -> Iterator[list[str]]:
    """As `_parse_delimited` (csv module, same quoting; a bare carriage return stays in its text;
    a row with more fields than the header is an error), `rows` records at a time. `f` is opened
    with newline="\n", so only "\n" ends a line."""
    kind = "CSV" if sep == "," else "TSV"
    lines = ((l[:-2] + "\n" if l.endswith("\r\n") else l).replace("\r", _CR) for l in f)
    reader = csv.reader(lines, delimiter=sep, strict=True, quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL)
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise UlmfitError(f"{path}: the file is empty; give a file with a header and one document per row")
        if text_col not in header:
            _column(_Records({h: [] for h in header}, 0, str), text_col, path)
        j, chunk = header.index(text_col), []
        for row in reader:
            if len(row) > len(header):
                raise UlmfitError(f"{path}: line {reader.line_num} (row {reader.line_num - 1}) has {len(row)} fields but "
                                  f"the header has {len(header)}; quote that row's text or remove the extra field")
            chunk.append((row[j] if j < len(row) else "").replace(_CR, "\r"))
            if len(chunk) == rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    except csv.Error as e:
        raise UlmfitError(f"{path}: cannot parse as {kind} at line {reader.line_num} ({e}); "
                          "check the quoting and the number of fields per row") from None


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
    """CSV keeps standard quoting; TSV is read without quoting (a `"` in a tweet is just a character).

    Parsed with the csv module so that every record's first line is known: a row with more fields
    than the header is an error naming that row (never shifted into an index), header names that
    are equal after trimming are an error (never silently renamed), and a bare carriage return
    inside a text (pandas writes them unquoted) stays in its text instead of ending the row.
    """
    kind = "CSV" if sep == "," else "TSV"
    cr = None
    if "\r" in text and "\n" in text:  # "\n" ends rows; a lone "\r" is part of a text
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            cr = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)  # an unused placeholder
            text = text.replace("\r", cr)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True,
                        quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL)
    rows, starts, prev = [], [], 0
    try:
        for row in reader:
            rows.append(row)
            starts.append(prev + 1)
            prev = reader.line_num
    except csv.Error as e:
        raise UlmfitError(f"{path}: cannot parse as {kind} at line {reader.line_num} ({e}); "
                          "check the quoting and the number of fields per row") from None
    if not rows or not any(h.strip() for h in rows[0]):
        raise UlmfitError(f"{path}: the file is empty; give a file with a header and one document per row")
    header = [h.strip() for h in rows[0]]
    seen: dict[str, int] = {}
    for j, name in enumerate(header):
        if name in seen:
            raise UlmfitError(f"{path}: line 1: columns {seen[name] + 1} and {j + 1} are both named {name!r}"
                              f"{' after trimming spaces' if rows[0][j] != rows[0][seen[name]] else ''}; "
                              "give every column its own name")
        seen[name] = j
    data, starts = rows[1:], starts[1:]
    for i, row in enumerate(data):
        if len(row) > len(header):
            raise UlmfitError(f"{path}: line {starts[i]} (row {i + 1}) has {len(row)} fields but the header has "
                              f"{len(header)}; quote that row's text (it holds a {'comma' if sep == ',' else 'tab'}) "
                              "or remove the extra field")

    def cell(row: list[str], j: int) -> str:
        v = row[j] if j < len(row) else ""
        return v.replace(cr, "\r") if cr else v

    columns = {name: [cell(row, j) for row in data] for j, name in enumerate(header)}
    return _Records(columns, len(data), lambda i: f"line {starts[i]} (row {i + 1})")


def _parse_jsonl(text: str, path: Path) -> _Records:
    rows, lines = [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        rows.append(_json_object(line, lineno, path))
        lines.append(lineno)
    names = list(dict.fromkeys(k for r in rows for k in r))  # keys in order of first appearance
    columns, nested = {}, {}
    for k in names:
        columns[k] = []
        for i, r in enumerate(rows):
            v = r.get(k)
            if kind := _nested_kind(v):
                nested.setdefault(k, (i, kind))
                v = None
            columns[k].append(_as_str(v))
    return _Records(columns, len(rows), lambda i: f"line {lines[i]} (row {i + 1})", nested)


def _read_class_folders(path: Path, encoding: str) -> _Records:
    """`path/<label>/*.txt`: each file is one document, the folder name is its label."""
    texts, labels, places = [], [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.glob("*.txt") if p.is_file())
        if not files:  # never dropped silently: a class with no examples is a mistake to point at
            raise UlmfitError(f"{sub}: class folder with no .txt documents; add its documents or remove the folder")
        for f in files:
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
    if name in recs.nested:
        i, kind = recs.nested[name]
        raise _nested_error(path, recs.where(i), name, kind)
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
    """A JSON value as text. Numbers are normalised so that one number is one label: 1 and 1.0
    both read "1" (an integral float prints as an int), 0.5 reads "0.5"; true/false read "true"/
    "false" as JSON writes them; NaN and Infinity read "nan"/"inf" (refused as labels)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else str(v)
    return v if isinstance(v, str) else str(v)
