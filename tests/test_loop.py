"""The training loop: resume reproduces an uninterrupted run; early stopping keeps the best weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ulmfit.train import loop as loop_mod
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
from ulmfit.train.optim import make_optimizer, param_groups


class Batches:
    """A loader of fixed random regression batches with the loader protocol (set_epoch, len, iter)."""

    def __init__(self, n=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.data = [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)]
        self.epoch = 0

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        order = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.epoch))
        return iter(self.data[i] for i in order)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.a(x))))

    def layer_groups(self):
        return [list(self.a.parameters()), list(self.b.parameters())]


class RegressionTask:
    def __init__(self, scripted=None):
        self.scripted, self.calls = scripted, 0

    def start_epoch(self, epoch):
        pass

    def loss(self, model, batch):
        x, y = batch
        return ((model(x) - y) ** 2).mean()

    def evaluate(self, model, loader):
        model.eval()
        with torch.no_grad():
            loss = sum(self.loss(model, b).item() for b in loader) / len(loader)  # the loop's loader: on its device
        value = self.scripted[self.calls] if self.scripted else loss
        self.calls += 1
        return {"valid_loss": value}


def run(tmp_path, stages, task=None, resume=False, seed=0, patience=3):
    torch.manual_seed(123)
    model = Net()
    groups = model.layer_groups()
    opt = make_optimizer(param_groups(groups, 1e-2), "adamw")
    res = run_phase(model, task or RegressionTask(), opt, groups, stages, Batches(), Batches(seed=1),
                    PhaseFiles(tmp_path, "toy"), LoopConfig(seed=seed, patience=patience, progress=False), resume=resume)
    return model, res


STAGES = [Stage("head", 2, 1e-2, freeze_to=-1), Stage("all", 3, 5e-3, freeze_to=0, can_stop_early=True)]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    full, full_res = run(tmp_path / "full", STAGES, patience=None)

    calls = {"n": 0}
    real = loop_mod.append_jsonl

    def crash_on_third_epoch(path, record):
        calls["n"] += 1
        if calls["n"] == 3:  # the third epoch (first of stage "all") dies before it is logged
            raise KeyboardInterrupt
        real(path, record)

    monkeypatch.setattr(loop_mod, "append_jsonl", crash_on_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", STAGES, patience=None)
    monkeypatch.setattr(loop_mod, "append_jsonl", real)
    resumed, res = run(tmp_path / "cut", STAGES, resume=True, patience=None)

    assert res.resumed_from == "stage 1 epoch 0"
    assert [r["epoch"] for r in res.history] == [0, 1, 2, 3, 4]
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert [r["valid_loss"] for r in res.history] == [r["valid_loss"] for r in full_res.history]


def test_early_stopping_stops_and_restores_best_weights(tmp_path):
    scripted = [0.9, 0.8, 0.5, 0.6, 0.7, 0.1]  # best at epoch 2; patience 2 stops after epoch 4
    model, res = run(tmp_path, [Stage("all", 6, 1e-2, can_stop_early=True)], RegressionTask(scripted), patience=2)
    assert len(res.history) == 5
    assert res.best_epoch == 2 and res.best_value == 0.5
    assert [r["best"] for r in res.history] == [True, True, True, False, False]
    from ulmfit.train.checkpoint import load_weights

    best = load_weights(tmp_path / "checkpoints" / "toy-best.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k])


def test_frozen_stage_leaves_lower_group_unchanged(tmp_path):
    torch.manual_seed(123)
    before = Net().a.weight.detach().clone()
    model, _ = run(tmp_path, [Stage("head", 2, 1e-2, freeze_to=-1)])
    assert torch.equal(model.a.weight, before)
    assert not torch.equal(model.b.weight, Net().b.weight)


def test_each_epoch_is_logged_as_json_line(tmp_path):
    import json

    run(tmp_path, [Stage("all", 2, 1e-2)])
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    recs = [json.loads(l) for l in lines]
    assert [r["epoch"] for r in recs] == [0, 1]
    assert {"phase", "stage", "train_loss", "valid_loss", "seconds"} <= set(recs[0])


@pytest.mark.parametrize("loop,resumed_at", [
    ({}, "stage 0 epoch 1 batch 2"),  # every 2 steps (`checkpoint_every`, long pretraining epochs)
    ({"checkpoint_every": None, "checkpoint_s": 0.0}, "stage 0 epoch 1 batch 3"),  # by time: here after every step
    ({"checkpoint_every": None, "checkpoint_s": None}, "stage 0 epoch 1"),  # epoch ends only
    ({"checkpoint_every": None, "checkpoint_s": 3600.0}, "stage 0 epoch 1")])  # not yet due
def test_resume_inside_an_epoch_matches_uninterrupted_lm_run(tmp_path, monkeypatch, loop, resumed_at):
    """An epoch checkpoints every `checkpoint_every` steps, and (any model, one process) once
    `checkpoint_s` seconds of it have passed; a crash mid-epoch resumes from the last checkpoint
    bit-exactly, including the LSTM state carried between batches and the dropout RNG. Without a
    checkpoint inside the epoch, the epoch is trained again from its start, to the same weights."""
    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.train.tasks import LMTask

    docs = _lm_docs()

    def lm_run(folder, resume=False):
        return _lm_run(docs, folder, 2, resume, **loop)

    full, full_res = lm_run(tmp_path / "full")
    real_loss, calls = LMTask.loss, {"n": 0}
    n_steps = len(LMLoader(docs, bs=4, bptt=8, seed=1))

    def crashing(self, model, batch):
        calls["n"] += 1
        if calls["n"] == n_steps + 4:  # step 4 of the second epoch
            raise KeyboardInterrupt
        return real_loss(self, model, batch)

    monkeypatch.setattr(LMTask, "loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        lm_run(tmp_path / "cut")
    monkeypatch.setattr(LMTask, "loss", real_loss)
    resumed, res = lm_run(tmp_path / "cut", resume=True)
    assert res.resumed_from == resumed_at
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert res.history[-1]["train_loss"] == pytest.approx(full_res.history[-1]["train_loss"], abs=1e-9)


def test_resumed_epoch_counts_the_time_before_the_interruption(tmp_path, monkeypatch):
    """An epoch resumed mid-way reports its whole duration (and tokens/s over it), not only the resumed part."""
    import time

    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.train.tasks import LMTask

    docs = _lm_docs()

    def lm_run(folder, resume=False):
        return _lm_run(docs, folder, 1, resume)[1]

    real_loss, calls = LMTask.loss, {"n": 0}

    def slow_then_crash(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # checkpointed after step 2, each of which slept 0.3 s
            raise KeyboardInterrupt
        time.sleep(0.3)
        return real_loss(self, model, batch)

    monkeypatch.setattr(LMTask, "loss", slow_then_crash)
    with pytest.raises(KeyboardInterrupt):
        lm_run(tmp_path)
    monkeypatch.setattr(LMTask, "loss", real_loss)
    record = lm_run(tmp_path, resume=True).history[-1]
    assert record["seconds"] >= 0.6  # the resumed part alone takes a few milliseconds
    n_tokens = sum(b[0].numel() for b in LMLoader(docs, bs=4, bptt=8, seed=1))
    assert record["train_tokens_per_s"] <= n_tokens / 0.6


def _lm_docs():
    import numpy as np

    from ulmfit.text.token_docs import TokenDocs

    rng = np.random.default_rng(0)
    return TokenDocs.from_arrays([np.r_[2, rng.integers(9, 40, rng.integers(5, 30))] for _ in range(60)])


def _lm_run(docs, folder, epochs: int, resume: bool = False, **loop):
    """A tiny LM trained `epochs` epochs, checkpointing every 2 steps (`loop`: other LoopConfig
    values); returns (model, PhaseResult)."""
    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.models.awd_lstm import PRESETS, AWDLSTMConfig, LanguageModel
    from ulmfit.train.tasks import LMTask

    torch.manual_seed(7)
    lm = LanguageModel(AWDLSTMConfig(vocab_size=40, **PRESETS["tiny"]))
    groups = lm.layer_groups()
    opt = make_optimizer(param_groups(groups, 1e-2), "adamw")
    cfg = LoopConfig(**{"seed": 3, "patience": None, "progress": False, "checkpoint_every": 2, **loop})
    res = run_phase(lm, LMTask(), opt, groups, [Stage("all", epochs, 1e-2)], LMLoader(docs, bs=4, bptt=8, seed=1),
                    LMLoader(docs, bs=4, bptt=8, shuffle=False), PhaseFiles(folder, "lm"), cfg, resume=resume)
    return lm, res


def test_clip_norm_counts_only_the_parameters_the_optimizer_updates():
    """A stale gradient on a parameter outside the optimizer must not shrink the clipped step."""
    torch.manual_seed(0)
    trained, other = nn.Linear(3, 1), nn.Linear(3, 1)
    model = nn.ModuleDict({"trained": trained, "other": other})
    opt = torch.optim.SGD(trained.parameters(), lr=1.0)
    stepper = loop_mod.GroupStepper(opt, [list(trained.parameters())], LoopConfig(clip=1.0))
    for p in trained.parameters():
        p.grad = torch.full_like(p, 0.1)  # norm 0.2 < clip: the step is the gradient itself
    for p in other.parameters():
        p.grad = torch.full_like(p, 100.0)  # stale; not the optimizer's
    before = trained.weight.detach().clone()
    stepper.step(model)
    assert torch.allclose(before - trained.weight, torch.full_like(before, 0.1))
