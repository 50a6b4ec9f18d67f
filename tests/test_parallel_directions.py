"""`--direction both` with the two models trained side by side, one process each (recipes/ulmfit.py
`parallel_plan`, train/processes.py): the same models as one after the other, the children's lines
in the parent's log, their errors raised in the parent, resume, and when `auto` says no."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ulmfit
from ulmfit.errors import UlmfitError
from ulmfit.recipes import ulmfit as recipe
from ulmfit.recipes.config import FitConfig
from ulmfit.train import loop
from ulmfit.train.processes import Job, JobFailed, run_in_processes
from ulmfit.train.progress import Heartbeat

from conftest import make_rows, tiny_fit_config

MODEL_FILES = ("lm.safetensors", "classifier.safetensors")


def both_config(parallel: str = "auto") -> FitConfig:
    cfg = tiny_fit_config()
    cfg.direction, cfg.parallel_directions = "both", parallel
    cfg.lm = replace(cfg.lm, epochs=1)
    cfg.clf = replace(cfg.clf, epochs=(1, 2), lrs=(3e-2, 2e-2))
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for name, n, seed in (("train", 120, 0), ("valid", 45, 1)):
        make_rows(n, seed).to_csv(d / f"{name}.csv", index=False)
    return d / "train.csv", d / "valid.csv"


def fit(data, out, cfg=None, **kw):
    return ulmfit.fit(*data, out=out, config=cfg, **kw)


@pytest.fixture(scope="module")
def sequential(data, tmp_path_factory):
    """The reference: one model after the other in this process, one torch thread (conftest)."""
    out = tmp_path_factory.mktemp("seq") / "m"
    fit(data, out, both_config("off"))
    return out


@pytest.fixture
def threads(request):
    """Run with this many torch threads in the parent (the children of a parallel run get half)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def assert_same_models(a, b):
    for sub in ("", "bwd"):
        for name in MODEL_FILES:
            ta, tb = load_file(a / sub / name), load_file(b / sub / name)
            assert ta.keys() == tb.keys()
            for k in ta:
                assert torch.equal(ta[k], tb[k]), f"{sub or 'fwd'}/{name}: {k} differs"
        assert (json.loads((a / sub / "valid_metrics.json").read_text())
                == json.loads((b / sub / "valid_metrics.json").read_text()))


def interrupted(data, out, when):
    """A run one after the other, stopped by a KeyboardInterrupt right after the history line `when(path, record)`."""
    real = loop.append_jsonl

    def append_then_stop(path, record):
        real(path, record)
        if when(path, record):
            raise KeyboardInterrupt

    loop.append_jsonl = append_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(data, out, both_config("auto"))  # one thread: auto runs one model after the other
    finally:
        loop.append_jsonl = real


def forward_classifier_epoch_1(path, record):
    return "bwd" not in path.parts and record["phase"] == "classifier" and record["epoch"] == 1


# ----------------------------------------------------------------------------- whole runs


@pytest.mark.slow
def test_parallel_run_equals_one_after_the_other_and_logs_both_children(data, sequential, tmp_path):
    lines = []
    fit(data, tmp_path / "m", both_config("on"), log=lines.append)  # on: two processes of 1 thread
    assert_same_models(sequential, tmp_path / "m")
    assert any("side by side, two processes of 1 thread(s) each (parallel_directions=on" in l for l in lines)
    for d, name in (("fwd", "forward"), ("bwd", "backward")):
        assert any(l.startswith(f"[{d}] {name} language model: ") for l in lines), d
        assert any(l.startswith(f"[{d}] classifier done: ") for l in lines), d
    assert any(l.startswith("validation macro-F1: ") for l in lines)  # the average: in the parent, unprefixed
    assert not multiprocessing.active_children()


@pytest.mark.slow
@pytest.mark.parametrize("threads", [2], indirect=True)
def test_resume_in_parallel_equals_the_uninterrupted_run(data, sequential, tmp_path, threads):
    out = tmp_path / "m"
    torch.set_num_threads(1)
    interrupted(data, out, forward_classifier_epoch_1)  # forward: LM done, classifier at epoch 1; backward: not begun
    torch.set_num_threads(threads)
    lines = []
    fit(data, out, resume=True, log=lines.append)  # auto, 2 threads: two processes of 1 thread
    assert any("side by side" in l and "parallel_directions=auto: torch has 2 threads" in l for l in lines)
    assert_same_models(sequential, out)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [2], indirect=True)
def test_resume_after_one_direction_trains_only_the_other(data, tmp_path, threads):
    out = tmp_path / "m"
    torch.set_num_threads(1)
    interrupted(data, out, lambda path, r: "bwd" in path.parts and r["phase"] == "classifier")
    forward = {f: (out / f).read_bytes() for f in ("history.jsonl", *MODEL_FILES)}
    torch.set_num_threads(threads)
    lines = []
    fit(data, out, resume=True, log=lines.append)
    assert "forward model: already trained, not trained again" in lines
    assert "directions: only the backward model is left to train, in this process" in lines
    assert not any("forward language model" in l for l in lines)
    assert {f: (out / f).read_bytes() for f in forward} == forward  # nothing of the forward model ran again
    records = [json.loads(l) for l in (out / "bwd" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["phase"] == "lm"] == [0]  # the backward LM was not trained again
    assert json.loads((out / "ulmfit.json").read_text())["directions"] == ["fwd", "bwd"]


@pytest.mark.slow
@pytest.mark.parametrize("threads", [2], indirect=True)
def test_a_childs_error_is_raised_in_the_parent_as_its_line(data, tmp_path, threads):
    out = tmp_path / "m"
    torch.set_num_threads(1)
    interrupted(data, out, forward_classifier_epoch_1)
    (out / "checkpoints" / "classifier-last.safetensors").write_bytes(b"not a checkpoint")  # the forward model's
    shutil.copytree(out, tmp_path / "copy")
    with pytest.raises(UlmfitError) as one_after_the_other:
        fit(data, tmp_path / "copy", resume=True)
    torch.set_num_threads(threads)
    with pytest.raises(UlmfitError) as side_by_side:
        fit(data, out, resume=True)
    assert str(side_by_side.value) == str(one_after_the_other.value).replace(str(tmp_path / "copy"), str(out))
    assert "classifier-last.safetensors: not a ulmfit resume-state file" in str(side_by_side.value)
    assert not multiprocessing.active_children()  # the backward model's process has ended (stopped, or done)
    assert not (out / "ulmfit.json").exists() and (out / "checkpoints").exists()  # still a run to resume


# ----------------------------------------------------------------------------- when auto says no


@pytest.mark.parametrize("setting, threads, ranks, parallel, why", [
    ("auto", 2, 1, True, "two processes of 1 thread(s) each (parallel_directions=auto: torch has 2 threads)"),
    ("auto", 4, 1, True, "two processes of 2 thread(s) each"),
    ("auto", 1, 1, False, "one after the other, 1 thread(s) each (parallel_directions=auto: torch has 1 thread"),
    ("auto", 2, 2, False, "(parallel_directions=auto: a torchrun run stays in its ranks)"),
    ("off", 2, 1, False, "(parallel_directions=off)"),
    ("on", 1, 1, True, "two processes of 1 thread(s) each (parallel_directions=on"),
])
def test_parallel_plan(monkeypatch, setting, threads, ranks, parallel, why):
    monkeypatch.setattr(recipe.torch, "get_num_threads", lambda: threads)
    monkeypatch.setenv("WORLD_SIZE", str(ranks))
    chosen, line = recipe.parallel_plan(setting, ["fwd", "bwd"])
    assert chosen is parallel and why in line and line.startswith("directions: the forward and backward models")
    assert recipe.parallel_plan(setting, ["bwd"]) == (False, "directions: only the backward model is left to train, "
                                                             "in this process")


def test_parallel_on_under_torchrun_and_bad_values_are_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UlmfitError, match="parallel_directions=on does not run under torchrun"):
        recipe.parallel_plan("on", ["fwd", "bwd"])
    with pytest.raises(UlmfitError, match=r"fit.parallel_directions='sometimes': choose one of auto, on, off"):
        FitConfig(parallel_directions="sometimes")


# ----------------------------------------------------------------------------- the process runner
# The jobs below run in spawned children, which import this module by name.


def say_and_return(name, log):
    log(f"hello from {name}")
    beat = Heartbeat(f"{name} epoch", total=4, every_s=1e-6)
    time.sleep(0.01)
    beat.update(1, 2.5, 10)
    return name.upper()


def refuse(log):
    raise UlmfitError("train.csv, row 3: no label; fill it in or drop the row")


def crash(log):
    raise ValueError("a bug")


def wait_forever(log):
    log("started")
    while True:
        time.sleep(0.05)


@pytest.mark.slow
def test_children_return_results_and_their_lines_reach_the_parent(capsys):
    lines = []
    results = run_in_processes({"a": Job(say_and_return, ("a",)), "b": Job(say_and_return, ("b",))}, threads=1,
                               log=lines.append)
    assert results == {"a": "A", "b": "B"}
    assert sorted(lines) == ["[a] hello from a", "[b] hello from b"]
    progress = capsys.readouterr().err.splitlines()  # no bar in a child: heartbeat lines, relayed to stderr
    for name in "ab":
        assert any(l.startswith(f"[{name}] {name} epoch: batch 1/4 (25%), loss 2.500") for l in progress), progress


@pytest.mark.slow
def test_a_failing_child_stops_the_other():
    with pytest.raises(UlmfitError) as e:
        run_in_processes({"a": Job(wait_forever), "b": Job(refuse)}, threads=1, log=lambda m: None)
    assert str(e.value) == "train.csv, row 3: no label; fill it in or drop the row"
    with pytest.raises(JobFailed, match=r"(?s)the b process failed:\nTraceback.*ValueError: a bug"):
        run_in_processes({"a": Job(wait_forever), "b": Job(crash)}, threads=1, log=lambda m: None)
    assert not multiprocessing.active_children()


@pytest.mark.slow
def test_ctrl_c_in_the_parent_stops_both_children():
    def interrupt_on_first_line(msg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_processes({"a": Job(wait_forever), "b": Job(wait_forever)}, threads=1, log=interrupt_on_first_line)
    assert not multiprocessing.active_children()


def test_a_script_without_a_main_guard_is_told_what_to_do(tmp_path):
    """A spawned child imports the parent's main script again; unguarded, the script's call runs
    there too and fails before the job starts: one line says why and what to do."""
    script = tmp_path / "unguarded.py"
    script.write_text("from ulmfit.train.processes import Job, run_in_processes\n\n"
                      "run_in_processes({'a': Job(print)}, threads=1, log=print)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(ulmfit.__file__).parents[1])}
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and "UlmfitError: the a process ended (exit code 1) before it started" in last
    assert 'put the call under `if __name__ == "__main__":`' in last and "parallel_directions=off" in last
