"""The one atomic writer, the write lock and the folder swap (ulmfit/fileio.py)."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

from ulmfit import fileio
from ulmfit.errors import UlmfitError


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_failed_write_keeps_the_old_file_and_names_path_cause_fix(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    fileio.atomic_write_json(path, {"v": 1})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(UlmfitError, match=r"cannot write .*a\.json: no space left on the device; free some disk"):
        fileio.atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_make_dir_explains_a_file_and_a_dangling_link(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UlmfitError, match="is a file, not a folder"):
        fileio.make_dir(tmp_path / "f" / "sub")
    os.symlink(tmp_path / "gone", tmp_path / "link")
    with pytest.raises(UlmfitError, match="symbolic link .* does not exist"):
        fileio.make_dir(tmp_path / "link")


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    folder = tmp_path / "m"
    with fileio.write_lock(folder):
        held = json.loads(fileio.lock_path(folder).read_text())
        assert held["pid"] == os.getpid()
        with pytest.raises(UlmfitError, match=f"being written by another ulmfit process \\(pid {os.getpid()}"):
            with fileio.write_lock(folder):
                pass
    assert not fileio.lock_path(folder).exists()  # released
    fileio.lock_path(folder).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "since": "x"}))
    with fileio.write_lock(folder):  # stale: its writer is gone
        assert json.loads(fileio.lock_path(folder).read_text())["pid"] == os.getpid()


def test_lock_is_released_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with fileio.write_lock(tmp_path / "m"):
            raise RuntimeError("boom")
    assert not fileio.lock_path(tmp_path / "m").exists()


@pytest.mark.parametrize("staging_complete", [True, False])
def test_swap_cut_between_its_renames_is_repaired(tmp_path, staging_complete):
    """Killed after the old folder was moved aside: a complete new folder goes in, else the old comes back."""
    folder, staging, old = tmp_path / "m", fileio.staging_path(tmp_path / "m"), tmp_path / ".m.old"
    old.mkdir()
    (old / "ulmfit.json").write_text("old")
    staging.mkdir()
    if staging_complete:
        (staging / "ulmfit.json").write_text("new")
    fileio.recover_swap(folder)
    assert (folder / "ulmfit.json").read_text() == ("new" if staging_complete else "old")
    assert not old.exists()


def test_swap_in_replaces_the_folder_whole(tmp_path):
    folder, staging = tmp_path / "m", fileio.staging_path(tmp_path / "m")
    folder.mkdir()
    (folder / "old.txt").write_text("1")
    staging.mkdir()
    (staging / "new.txt").write_text("2")
    fileio.swap_in(staging, folder)
    assert [p.name for p in folder.iterdir()] == ["new.txt"] and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
