"""English package descriptions from the Debian archive's `Translation-en` lists.

A record is `Package:`, `Description-md5:`, `Description-en: synopsis` followed by continuation
lines that start with a space; a line ` .` is a paragraph break. One document per package:
`Synopsis. Paragraph. Paragraph.` Many packages share paragraphs (`foo`, `foo-data`, `foo-doc`),
so a paragraph already used by an earlier package is left out, and a package with no new
paragraph is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .clean import doc_key, normalize
from .fetch import apt_translations

PACKAGE = "Debian Translation-en lists"
LICENCE = ("each description is part of its Debian package and under that package's licence "
           "(DFSG-free, Debian main)")


def records(raw: str) -> Iterator[tuple[str, str, list[str]]]:
    """(package, synopsis, long-description paragraphs) for each record of a Translation list."""
    pkg, synopsis, paras, cur, in_desc = "", "", [], [], False

    def flush():
        return (pkg, synopsis, [p for p in paras + [normalize(" ".join(cur))] if p])

    for line in raw.splitlines():
        if not line.strip():
            if pkg:
                yield flush()
            pkg, synopsis, paras, cur, in_desc = "", "", [], [], False
        elif line.startswith("Package:"):
            pkg = line.split(":", 1)[1].strip()
        elif line.startswith("Description-en:"):
            synopsis, in_desc = normalize(line.split(":", 1)[1]), True
        elif line.startswith(" ") and in_desc:
            if line.strip() == ".":
                paras.append(normalize(" ".join(cur)))
                cur = []
            else:
                cur.append(line.strip())
        else:
            in_desc = False
    if pkg:
        yield flush()


def clean_debian(raw: str, seen: set[bytes] | None = None) -> Iterator[str]:
    """A Translation-en list -> one document per package with its not-yet-seen paragraphs."""
    seen = set() if seen is None else seen
    for _, synopsis, paras in records(raw):
        fresh = []
        for p in paras:
            key = doc_key(p)
            if key not in seen:
                seen.add(key)
                fresh.append(p)
        if fresh and synopsis:
            head = synopsis[0].upper() + synopsis[1:]
            yield normalize(f"{head.rstrip('.')}. {' '.join(fresh)}")


def fetch(cache: Path) -> Path:
    """The private apt lists folder holding the Translation-en files."""
    return apt_translations(cache)


def translation_files(lists: Path) -> list[Path]:
    """The uncompressed `*_i18n_Translation-en` files, main archive first."""
    return sorted(Path(lists).glob("*_i18n_Translation-en"), key=lambda p: ("-" in p.name.split("_dists_")[1].split("_")[0], p.name))


def read(lists: Path) -> Iterator[str]:
    """Documents of the `debian-descriptions` source."""
    seen: set[bytes] = set()
    for path in translation_files(lists):
        yield from clean_debian(path.read_text(encoding="utf-8", errors="replace"), seen)


def version(lists: Path) -> str:
    """Suites and the `Date:` of their Release files, e.g. `bookworm (2026-07-11)`."""
    out = []
    for rel in sorted(Path(lists).glob("*_InRelease")):
        suite = rel.name.split("_dists_")[-1].replace("_InRelease", "")
        date = next((ln[5:].strip() for ln in rel.read_text(errors="replace").splitlines()
                     if ln.startswith("Date:")), "?")
        out.append(f"{suite} ({date})")
    return "; ".join(out) or "unknown"
