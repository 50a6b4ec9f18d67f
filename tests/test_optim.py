import pytest
import torch
from torch import nn

from ulmfit.train.optim import discriminative_lrs, make_optimizer, param_groups, set_lr_mom


def _layer_groups():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4)
    lin = nn.Linear(4, 4)
    norm = nn.LayerNorm(4)
    head = nn.Linear(4, 2)
    return [list(emb.parameters()), list(lin.parameters()) + list(norm.parameters()), list(head.parameters())]


def test_discriminative_lrs_ratio():
    lrs = discriminative_lrs(4, 0.01)
    assert lrs[-1] == pytest.approx(0.01)
    for lo, hi in zip(lrs, lrs[1:]):
        assert hi / lo == pytest.approx(2.6)
    assert lrs[0] == pytest.approx(0.01 / 2.6**3)
    assert discriminative_lrs(1, 0.5) == [0.5]


def test_param_groups_no_weight_decay_on_1d():
    groups = param_groups(_layer_groups(), lr=0.01, weight_decay=0.1)
    for g in groups:
        dims = {p.ndim for p in g["params"]}
        if g["weight_decay"] == 0.0:
            assert dims == {1}
        else:
            assert g["weight_decay"] == 0.1 and all(d >= 2 for d in dims)
        assert g["lr"] == g["base_lr"] == g["initial_lr"]
    layers = sorted({g["layer"] for g in groups})
    assert layers == [0, 1, 2]
    by_layer = {g["layer"]: g["lr"] for g in groups}
    assert by_layer[2] == pytest.approx(0.01)
    assert by_layer[1] == pytest.approx(0.01 / 2.6)
    # layer 1: linear weight (decay) + linear bias and both LayerNorm params (no decay)
    layer1 = [g for g in groups if g["layer"] == 1]
    assert sorted(len(g["params"]) for g in layer1) == [1, 3]
    # every parameter once
    n = sum(len(g["params"]) for g in groups)
    assert n == sum(len(lg) for lg in _layer_groups())


def test_param_groups_tied_weight_listed_once():
    emb = nn.Embedding(5, 3)
    dec = nn.Linear(3, 5)
    dec.weight = emb.weight
    groups = param_groups([[emb.weight], [dec.weight, dec.bias]], lr=1e-3)
    make_optimizer(groups)  # torch would refuse a parameter in two groups
    assert sum(len(g["params"]) for g in groups) == 2


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_make_optimizer_and_set_lr_mom(kind):
    groups = param_groups(_layer_groups(), lr=0.01)
    opt = make_optimizer(groups, kind=kind)
    set_lr_mom(opt, 0.5, 0.7)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(g["base_lr"] * 0.5)
        if kind == "sgd":
            assert g["momentum"] == 0.7
        else:
            assert g["betas"] == (0.7, 0.99)
    set_lr_mom(opt, 1.0, None)  # momentum untouched
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(g["base_lr"])
        assert (g["momentum"] if kind == "sgd" else g["betas"][0]) == 0.7
    # ratio between layer groups kept
    lrs = {g["layer"]: g["lr"] for g in opt.param_groups}
    assert lrs[2] / lrs[1] == pytest.approx(2.6)


def test_make_optimizer_unknown_kind():
    with pytest.raises(ValueError, match="adamw"):
        make_optimizer(param_groups(_layer_groups(), lr=0.01), kind="lamb")
