"""Without a progress bar (output to a file), a training epoch prints a progress line every N seconds."""
from __future__ import annotations

import io

from ulmfit.train.progress import Heartbeat


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_heartbeat_prints_at_most_every_interval(monkeypatch):
    monkeypatch.setattr(Heartbeat, "_last_line", None)
    clock, out = FakeClock(), io.StringIO()
    beat = Heartbeat("lm all 1/2", total=100, every_s=30, stream=out, clock=clock)
    printed = []
    for i in range(1, 101):
        clock.t += 1.0  # one second per batch
        printed.append(beat.update(i, loss=4.0, tokens=1000 * i))
    lines = out.getvalue().splitlines()
    assert sum(printed) == len(lines) == 3  # at 30, 60, 90 s
    assert lines[0] == "lm all 1/2: batch 30/100 (30%), loss 4.000, 1,000 tokens/s, 0:30 elapsed, ~1:10 left"


def test_gap_spans_epochs(monkeypatch):
    """The next epoch's heartbeat counts from the previous epoch's last line: 25 s of batches and a
    10 s validation pass after a line, the first batch of the next epoch prints."""
    monkeypatch.setattr(Heartbeat, "_last_line", None)
    clock, out = FakeClock(), io.StringIO()
    first = Heartbeat("e1", total=100, every_s=30, stream=out, clock=clock)
    clock.t += 31
    assert first.update(31, 1.0, 100)
    clock.t += 25 + 10
    second = Heartbeat("e2", total=100, every_s=30, stream=out, clock=clock)
    clock.t += 1
    assert second.update(1, 1.0, 10)
    assert out.getvalue().splitlines()[-1].startswith("e2: batch 1/100")



def test_epochs_shorter_than_the_interval_still_print(monkeypatch):
    """Before any line was printed, the gap counts from the first heartbeat of the process, not from
    each epoch's start: three 20-second epochs (plus validation) print a line in the second one."""
    monkeypatch.setattr(Heartbeat, "_last_line", None)
    clock, out = FakeClock(), io.StringIO()
    printed = []
    for e in range(3):
        beat = Heartbeat(f"e{e}", total=20, every_s=30, stream=out, clock=clock)
        for i in range(1, 21):
            clock.t += 1.0
            printed.append((e, beat.update(i, 1.0, 10 * i)))
        clock.t += 5  # validation between epochs
    assert [e for e, p in printed if p] == [1, 2]  # at 30 s (epoch 2) and 60 s (epoch 3)
    assert out.getvalue().splitlines()[0].startswith("e1: batch 5/20")

def test_heartbeat_off():
    clock, out = FakeClock(), io.StringIO()
    for every in (None, 0):
        beat = Heartbeat("x", total=10, every_s=every, stream=out, clock=clock)
        clock.t += 1000
        assert not beat.update(1, 1.0, 10)
    assert out.getvalue() == ""


def test_loop_prints_heartbeats_when_stderr_is_not_a_terminal(tmp_path, capsys):
    import torch

    from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
    from ulmfit.train.optim import make_optimizer, param_groups

    class Batches(list):
        def set_epoch(self, e):
            pass

    class Task:
        def loss(self, model, batch):
            return ((model(batch[0]) - batch[1]) ** 2).mean()

        def evaluate(self, model, loader):
            return {"valid_loss": sum(self.loss(model, b).item() for b in loader)}

    data = Batches((torch.randn(8, 4), torch.randn(8, 1)) for _ in range(6))

    def train(**cfg):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        groups = [list(model.parameters())]
        run_phase(model, Task(), make_optimizer(param_groups(groups, 1e-2), "adamw"), groups,
                  [Stage("all", 1, 1e-2)], data, data, PhaseFiles(tmp_path / str(len(cfg)), "toy"),
                  LoopConfig(patience=None, **cfg))
        return capsys.readouterr().err.splitlines()

    lines = train(heartbeat_s=1e-9)  # stderr is captured, not a terminal: a line after every batch
    assert len(lines) == 6 and lines[-1].startswith("toy all 1/1: batch 6/6 (100%), loss ")
    assert train(heartbeat_s=1e-9, progress=False) == []  # progress=False silences it


def test_resumed_pass_estimates_from_its_own_rate_and_says_through_a_callback(monkeypatch):
    """A pass resumed at unit 400 of 1000 (the teacher cache of `distill`): 200 units in 40 s leave 400 units, 80 s."""
    monkeypatch.setattr(Heartbeat, "_last_line", None)
    clock, said = FakeClock(), []
    beat = Heartbeat("teacher probabilities", total=1000, every_s=30, clock=clock, unit="text", rate_unit="texts",
                     say=said.append, start=400)
    clock.t += 40.0
    assert beat.update(600, None, 200)
    assert said == ["teacher probabilities: text 600/1,000 (60%), 5 texts/s, 0:40 elapsed, ~1:20 left"]
