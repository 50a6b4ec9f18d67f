"""The one registry downloader: one package file fetched with the registry's ordinary client.

`download("npm" | "pypi-wheel" | "pypi-sdist" | "apt", name, version, dest)` runs `npm pack`,
`pip download` or `apt-get download` in a private folder inside `dest`, then renames the one file
the client wrote into `dest`: an interrupted or failed download never leaves a file that looks
finished, and the private folder is removed either way. A missing client or a failed download is
a `DownloadError` (a `UlmfitError`): one line with the command and the client's own last error line;
callers add where to put a file fetched by hand.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.fileio import make_dir, mapped


class DownloadError(UlmfitError):
    """A package could not be fetched. `reason`: the client's last error line (or why it did not run);
    `missing_client`: the client is not installed."""

    def __init__(self, message: str, reason: str = "", missing_client: bool = False):
        super().__init__(message)
        self.reason, self.missing_client = reason or message, missing_client


def _pip() -> list[str]:
    return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-cache-dir"]


# registry -> (command for name and version (None: the registry's current one), file the client writes)
CLIENTS = {
    "npm": (lambda n, v: ["npm", "pack", f"{n}@{v}" if v else n], "*.tgz"),
    "pypi-wheel": (lambda n, v: _pip() + ["--only-binary=:all:", f"{n}=={v}" if v else n, "-d", "."], "*.whl"),
    "pypi-sdist": (lambda n, v: _pip() + ["--no-binary", ":all:", f"{n}=={v}" if v else n, "-d", "."], "*.tar.gz"),
    "apt": (lambda n, v: ["apt-get", "download", f"{n}={v}" if v else n], "*.deb"),
}


def run_client(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    """Run a registry client in `cwd`; DownloadError when it is not installed or fails. Its stdout."""
    if cmd[0] != sys.executable and shutil.which(cmd[0]) is None:
        raise DownloadError(f"`{cmd[0]}` is not installed (not on PATH)", missing_client=True)
    make_dir(cwd)
    shown = " ".join(c if c != sys.executable else "python" for c in cmd)
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DownloadError(f"`{shown}` failed: {e}", reason=str(e)) from None
    if res.returncode != 0:
        lines = [ln.strip() for ln in ((res.stderr or "") + (getattr(res, "stdout", "") or "")).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERR" in ln]  # npm ERR! ..., ERROR: ...
        last = (errors or lines or [f"exit code {res.returncode}"])[-1]
        raise DownloadError(f"`{shown}` failed: {last}", reason=last)
    return getattr(res, "stdout", "") or ""


def download(registry: str, name: str, version: str | None, dest: str | os.PathLike, timeout: int = 900) -> Path:
    """Fetch `name` (`version`; None: the registry's current one) from `registry` into `dest`; the
    path of the file. Atomic: the file appears in `dest` whole, or not at all."""
    if registry not in CLIENTS:
        raise ValueError(f"unknown registry {registry!r}; one of {sorted(CLIENTS)}")
    command, pattern = CLIENTS[registry]
    dest = make_dir(dest)
    with mapped(dest):
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".download-"))
    try:
        run_client(command(name, version), cwd=tmp, timeout=timeout)
        found = sorted(tmp.glob(pattern))
        if not found:
            raise DownloadError(f"{registry}: downloading {name} {version or ''} saved no {pattern} file",
                                reason=f"no {pattern} saved")
        final = dest / found[-1].name
        with mapped(final):
            os.replace(found[-1], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
