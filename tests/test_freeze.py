import pytest
import torch
from torch import nn

from ulmfit.train.freeze import freeze_to, n_trainable, unfreeze
from ulmfit.train.optim import make_optimizer, param_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.c = nn.Linear(3, 1)

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))

    def layer_groups(self):
        return [list(self.a.parameters()), list(self.b.parameters()), list(self.c.parameters())]


def _step(model, opt):
    x = torch.randn(8, 3)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_freeze_to_negative_counts_from_end():
    m = Tiny()
    groups = m.layer_groups()
    freeze_to(groups, -1)
    assert [all(p.requires_grad for p in g) for g in groups] == [False, False, True]
    freeze_to(groups, -2)
    assert [all(p.requires_grad for p in g) for g in groups] == [False, True, True]
    freeze_to(groups, 1)
    assert [all(p.requires_grad for p in g) for g in groups] == [False, True, True]
    freeze_to(groups, 0)
    assert all(p.requires_grad for p in m.parameters())
    freeze_to(m, -1)  # a model with layer_groups() works too
    assert n_trainable(m) == 3 + 1
    unfreeze(groups)
    assert n_trainable(m) == sum(p.numel() for p in m.parameters())
    with pytest.raises(ValueError):
        freeze_to(groups, 4)


def test_frozen_params_unchanged_after_step_with_weight_decay():
    m = Tiny()
    opt = make_optimizer(param_groups(m.layer_groups(), lr=0.1, weight_decay=0.1))
    _step(m, opt)  # all trainable: leaves gradients and Adam state behind
    freeze_to(m.layer_groups(), -1)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    _step(m, opt)
    for name, p in m.named_parameters():
        if name.startswith("c."):
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
