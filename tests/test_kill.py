"""Kill -9 at several points of `fit`, `fit --overwrite` and `pretrain`, then `--resume`: the result
equals the uninterrupted run, and no folder ever looks complete (has ulmfit.json) unless it loads.

The runs are real subprocesses killed with SIGKILL when the run has reached a point (a number of
logged epochs, a checkpoint file); tiny data and models keep each run to seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import small_run, tiny_fit_config
from ulmfit.cli import main
from ulmfit.fileio import atomic_write_json
from ulmfit.train.checkpoint import load_weights

SRC = str(Path(__file__).resolve().parents[1] / "src")
VOLATILE = {"seconds", "train_tokens_per_s"}  # wall-clock figures, different in every run


def spawn(argv):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", "import sys, torch; torch.set_num_threads(1); "
                             "from ulmfit.cli import main; sys.exit(main(sys.argv[1:]))", *map(str, argv)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def lines(path: Path) -> int:
    try:
        return sum(1 for l in path.read_text().splitlines() if l.strip())
    except OSError:
        return 0


def kill_when(proc, reached, timeout=300.0) -> bool:
    """SIGKILL `proc` as soon as `reached()`; False when it finished first."""
    t0 = time.monotonic()
    while proc.poll() is None:
        if reached():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("the run did not reach the kill point")
        time.sleep(0.005)
    return False


def history(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(l).items() if k not in VOLATILE}
            for l in (folder / "history.jsonl").read_text().splitlines() if l.strip()]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def assert_never_falsely_complete(folder: Path) -> None:
    """A folder with ulmfit.json must load and predict; otherwise it must not claim to be a model."""
    from ulmfit.recipes.predictor import load

    if (folder / "ulmfit.json").exists():
        assert len(load(folder).predict(["a test text"])) == 1


@pytest.fixture(scope="module")
def fit_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    args = small_run(d, 60, 2, (1, 1, 1, 2))
    assert main(["fit", *map(str, args), "--out", str(d / "ref")]) == 0  # the uninterrupted run
    return d, args


# kill points: (file to watch, relative to the folder being written; how many lines / 0 = exists)
FIT_POINTS = [("checkpoints", 0), ("history.jsonl", 2), ("history.jsonl", 4)]


@pytest.mark.slow
def test_fit_killed_and_resumed_equals_uninterrupted(fit_env, tmp_path):
    d, args = fit_env
    for i, (name, n) in enumerate(FIT_POINTS):
        out = tmp_path / f"run{i}"
        watch = out / name
        proc = spawn(["fit", *args, "--out", out])
        killed = kill_when(proc, (lambda: watch.exists()) if n == 0 else (lambda: lines(watch) >= n))
        assert_never_falsely_complete(out)
        if killed:
            assert main(["fit", "--out", str(out), "--resume"]) == 0, f"resume after kill point {name} {n}"
        assert history(out) == history(d / "ref"), f"kill point {name} {n}"
        same_weights(out / "classifier.safetensors", d / "ref" / "classifier.safetensors")
        same_weights(out / "lm.safetensors", d / "ref" / "lm.safetensors")


@pytest.mark.slow
def test_fit_overwrite_killed_keeps_the_old_model(fit_env, tmp_path):
    """Until the new model is complete the old one stays whole and usable; --resume finishes the new."""
    from ulmfit.fileio import staging_path

    d, args = fit_env
    out = tmp_path / "model"
    shutil.copytree(d / "ref", out)
    (out / "OLD").write_text("the old model")  # tells the old folder from the new one
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    staging = staging_path(out)
    for name, n in (("history.jsonl", 2), ("history.jsonl", 4)):
        proc = spawn(["fit", *args, "--out", out, "--overwrite"] if not staging.exists() else ["fit", "--out", out, "--resume"])
        assert kill_when(proc, lambda: lines(staging / name) >= n)
        assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        assert_never_falsely_complete(out)
        assert_never_falsely_complete(staging)
    assert main(["fit", "--out", str(out), "--resume"]) == 0
    assert not (out / "OLD").exists() and not staging.exists()
    assert history(out) == history(d / "ref")
    same_weights(out / "classifier.safetensors", d / "ref" / "classifier.safetensors")


@pytest.mark.slow
def test_two_writers_never_both_succeed(fit_env, tmp_path):
    """Two `fit` runs started together into one --out: one trains, the other gets one line naming it."""
    d, args = fit_env
    out = tmp_path / "model"
    procs = [spawn(["fit", *args, "--out", out]) for _ in range(2)]
    codes = [p.wait() for p in procs]
    assert sorted(codes) == [0, 2], codes
    winner, loser = (procs[0], procs[1]) if codes[0] == 0 else (procs[1], procs[0])
    err = loser.stderr.read().decode()
    assert "being written" in err and f"pid {winner.pid}" in err and "Traceback" not in err, err
    assert history(out) == history(d / "ref")


@pytest.mark.slow
def test_pretrain_killed_and_resumed_equals_uninterrupted(tmp_path):
    from test_pretrain import make_corpus

    corpus = make_corpus(tmp_path / "corpus")
    sets = ["--preset", "tiny", *sum((["--set", s] for s in ("bs=8", "bptt=10", "epochs=2", "lr=0.02", "min_freq=1",
                                                              "valid_every=10", "checkpoint_every=5")), [])]
    assert main(["pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "ref"), *sets]) == 0
    for i, (name, n) in enumerate([("checkpoints/lm-last.safetensors", 0), ("history.jsonl", 1)]):
        out = tmp_path / f"run{i}"
        watch = out / name
        proc = spawn(["pretrain", "--corpus", corpus, "--out", out, *sets])
        killed = kill_when(proc, (lambda: watch.exists()) if n == 0 else (lambda: lines(watch) >= n))
        assert not (out / "ulmfit.json").exists() or not killed or (out / "lm.safetensors").exists()
        if killed:
            assert main(["pretrain", "--corpus", str(corpus), "--out", str(out), "--resume", *sets]) == 0
        assert history(out) == history(tmp_path / "ref")
        same_weights(out / "lm.safetensors", tmp_path / "ref" / "lm.safetensors")


@pytest.mark.slow
def test_kill_in_the_first_checkpoint_write_logs_no_epoch_twice(tmp_path, monkeypatch, tiny_data):
    """The epoch is logged, then the process dies while writing its first checkpoint: the resumed run
    trains that epoch again and logs it once."""
    from ulmfit.train import loop

    cfg = tiny_fit_config()
    cfg.lm = replace(cfg.lm, epochs=2)
    cfg.clf = replace(cfg.clf, epochs=(1, 0, 0, 0))
    atomic_write_json(tmp_path / "c.json", cfg.to_dict())
    real = loop.save_state

    def die(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_state", die)
    argv = ["fit", "--train", str(tiny_data["train"]), "--valid", str(tiny_data["valid"]), "--out",
            str(tmp_path / "m"), "--config", str(tmp_path / "c.json")]
    assert main(argv) == 130
    assert lines(tmp_path / "m" / "history.jsonl") == 1 and not (tmp_path / "m" / "checkpoints" / "lm-last.safetensors").exists()
    monkeypatch.setattr(loop, "save_state", real)
    assert main(["fit", "--out", str(tmp_path / "m"), "--resume"]) == 0
    assert [(r["phase"], r["epoch"]) for r in history(tmp_path / "m")] == [("lm", 0), ("lm", 1), ("classifier", 0)]
