import pytest
import torch
from torch import nn

from ulmfit.train.lr_find import lr_find
from ulmfit.train.optim import make_optimizer, param_groups
from ulmfit.train.plots import plot_lr_find


def _data(n_batches=8, bs=32):
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[2.0], [-3.0], [0.5]])
    batches = []
    for _ in range(n_batches):
        x = torch.randn(bs, 3, generator=g)
        batches.append((x, x @ w + 1.0))
    return batches


def _mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


def test_lr_find_sensible_and_no_side_effect():
    model = _model()
    model[0].weight.requires_grad_(False)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr_find(model, _data(), _mse, lambda: torch.optim.SGD(model.parameters(), lr=1e-3))
    # weights, requires_grad and mode are restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    assert not model.training
    # the batches (8 of them) were cycled and the run stopped on divergence before 10.0
    assert len(res.lrs) > 8 and res.lrs[-1] < 10.0
    assert len(res.lrs) == len(res.losses) == len(res.raw_losses)
    assert all(a < b for a, b in zip(res.lrs, res.lrs[1:]))
    # SGD on this problem trains well around 1e-2..1: the suggestion lies in a sane range
    assert 1e-4 < res.suggestion < 1.0, res.suggestion
    assert res.method == "steepest"
    assert 1e-5 < res.valley < 2.0 and 1e-5 < res.min_loss_lr < 1.0
    # training at the suggested lr actually lowers the loss
    opt = torch.optim.SGD(model.parameters(), lr=res.suggestion)
    batches = _data()
    start = sum(_mse(model, b).item() for b in batches)
    for _ in range(20):
        for b in batches:
            opt.zero_grad()
            _mse(model, b).backward()
            opt.step()
    assert sum(_mse(model, b).item() for b in batches) < 0.5 * start


def test_lr_find_with_given_optimizer_keeps_ratio_and_state():
    model = _model()
    groups = param_groups([list(model[0].parameters()), list(model[2].parameters())], lr=1e-3)
    opt = make_optimizer(groups)
    res = lr_find(model, _data(), _mse, opt, num_it=30, stop_div=False)
    assert len(res.lrs) == 30
    assert res.lrs[0] == pytest.approx(1e-7) and res.lrs[-1] == pytest.approx(10.0)
    assert [g["lr"] for g in opt.param_groups] == [g["base_lr"] for g in opt.param_groups]
    assert opt.state_dict()["state"] == {}
    assert all(p.grad is None for p in model.parameters())


def test_lr_find_bad_arguments():
    model = _model()
    with pytest.raises(ValueError):
        lr_find(model, [], _mse, lambda: torch.optim.SGD(model.parameters(), lr=1e-3))
    with pytest.raises(ValueError):
        lr_find(model, _data(), _mse, lambda: torch.optim.SGD(model.parameters(), lr=1e-3), start_lr=1.0, end_lr=0.1)


def test_plot_lr_find_writes_png(tmp_path):
    model = _model()
    res = lr_find(model, _data(), _mse, lambda: torch.optim.SGD(model.parameters(), lr=1e-3), num_it=40)
    out = tmp_path / "lr_find.png"
    plot_lr_find(res.lrs, res.losses, res.suggestion, out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
