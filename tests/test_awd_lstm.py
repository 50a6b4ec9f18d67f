"""AWD-LSTM encoder and language model: config, shapes, state carry, weight tying, layer groups,
AR/TAR."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import (
    PRESETS,
    AWDLSTM,
    AWDLSTMConfig,
    LanguageModel,
    ar_tar_loss,
    detach_state,
)

V = 40


def tiny_cfg(**kw) -> AWDLSTMConfig:
    return AWDLSTMConfig(vocab_size=V, **{**PRESETS["tiny"], "n_layers": 3, **kw})


def test_config_defaults_json_roundtrip_and_errors():
    cfg = AWDLSTMConfig(vocab_size=100)
    assert (cfg.emb_size, cfg.hidden_size, cfg.n_layers, cfg.pad_idx) == (400, 1150, 3, 1)
    assert AWDLSTMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert AWDLSTMConfig(vocab_size=100, drop_mult=0.5).p("input_p") == pytest.approx(0.125)
    small = AWDLSTMConfig.preset("small", vocab_size=100, drop_mult=0.3)
    assert small.emb_size == PRESETS["small"]["emb_size"] and small.drop_mult == 0.3
    with pytest.raises(UlmfitError, match="unknown field"):
        AWDLSTMConfig.from_dict({"vocab_size": 10, "hiden_size": 3})
    with pytest.raises(UlmfitError, match="drop_mult"):
        AWDLSTMConfig(vocab_size=100, drop_mult=5.0)
    with pytest.raises(UlmfitError, match="preset"):
        AWDLSTMConfig.preset("huge", vocab_size=100)


def test_layer_sizes_and_drop_mult_reach_modules():
    cfg = tiny_cfg(drop_mult=0.5)
    enc = AWDLSTM(cfg)
    assert [(r.input_size, r.hidden_size) for r in enc.rnns] == [(16, 32), (32, 32), (32, 16)]
    assert enc.rnns[0].weight_p == pytest.approx(0.1)
    assert enc.input_dp.p == pytest.approx(0.125)
    assert [d.p for d in enc.hidden_dps] == [pytest.approx(0.075)] * 2
    assert enc.embedding.weight.abs().max() <= 0.1


def test_lm_forward_shapes_and_state():
    torch.manual_seed(0)
    lm = LanguageModel(tiny_cfg())
    ids = torch.randint(0, V, (4, 9))
    logits, state, raw, dropped = lm(ids)
    assert logits.shape == (4, 9, V)
    assert raw.shape == dropped.shape == (4, 9, 16)
    assert [tuple(h.shape) for h, _ in state] == [(1, 4, 32), (1, 4, 32), (1, 4, 16)]
    assert [tuple(h.shape) for h, _ in lm.init_state(4)] == [(1, 4, 32), (1, 4, 32), (1, 4, 16)]
    # T = 1 (generation) works with a carried state
    logits1, state1, _, _ = lm(ids[:, :1], state)
    assert logits1.shape == (4, 1, V)
    detached = detach_state(state1)
    assert all(not h.requires_grad and not c.requires_grad for h, c in detached)
    assert detach_state(None) is None


def test_lm_eval_state_carry_equals_one_pass():
    torch.manual_seed(0)
    lm = LanguageModel(tiny_cfg()).eval()
    ids = torch.randint(0, V, (3, 10))
    full, full_state, _, _ = lm(ids)
    a, s, _, _ = lm(ids[:, :5])
    b, s, _, _ = lm(ids[:, 5:], s)
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    # zero init_state equals no state, and step-by-step equals one pass
    s, steps = lm.init_state(3), []
    for t in range(10):
        out, s, _, _ = lm(ids[:, t : t + 1], s)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full)
    for (h1, c1), (h2, c2) in zip(s, full_state):
        torch.testing.assert_close(h1, h2)
        torch.testing.assert_close(c1, c2)


def test_lm_train_mode_is_stochastic_eval_is_not():
    torch.manual_seed(0)
    lm = LanguageModel(tiny_cfg(drop_mult=2.0))
    ids = torch.randint(0, V, (3, 6))
    assert not torch.allclose(lm(ids)[0], lm(ids)[0])
    lm.eval()
    torch.testing.assert_close(lm(ids)[0], lm(ids)[0])
    _, _, raw, dropped = lm(ids)
    assert raw is dropped  # no output dropout in eval


def test_weight_tying_shares_storage_and_counts_once():
    lm = LanguageModel(tiny_cfg())
    assert lm.decoder.weight is lm.encoder.embedding.weight
    assert lm.decoder.weight.data_ptr() == lm.encoder.embedding.weight.data_ptr()
    params = list(lm.parameters())
    assert sum(p is lm.encoder.embedding.weight for p in params) == 1
    # a gradient step on the embedding changes the decoder too
    lm.eval()
    loss = lm(torch.randint(0, V, (2, 5)))[0].sum()
    loss.backward()
    with torch.no_grad():
        lm.encoder.embedding.weight.add_(1.0)
    assert torch.equal(lm.decoder.weight, lm.encoder.embedding.weight)
    untied = LanguageModel(tiny_cfg(tie_weights=False))
    assert untied.decoder.weight is not untied.encoder.embedding.weight
    assert len(list(untied.parameters())) == len(params) + 1


def _assert_partition(groups, model):
    flat = [p for g in groups for p in g]
    assert all(len(g) > 0 for g in groups)
    assert len(flat) == len({id(p) for p in flat})  # no parameter twice
    assert {id(p) for p in flat} == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("tie", [True, False])
def test_layer_groups_cover_every_parameter_once(tie):
    lm = LanguageModel(tiny_cfg(tie_weights=tie))
    groups = lm.layer_groups()
    assert len(groups) == 3 + 1
    _assert_partition(groups, lm)
    assert groups[-1][0] is lm.encoder.embedding.weight
    assert any(p is lm.decoder.bias for p in groups[-1])
    assert groups[0] == list(lm.encoder.rnns[0].parameters())
    enc_groups = lm.encoder.layer_groups()
    assert enc_groups[0] == [lm.encoder.embedding.weight] and len(enc_groups) == 4
    _assert_partition(enc_groups, lm.encoder)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    lm = LanguageModel(tiny_cfg())
    ids = torch.randint(2, V, (3, 7))
    logits, _, raw, dropped = lm(ids)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids.reshape(-1)) + ar_tar_loss(raw, dropped)
    loss.backward()
    for name, p in lm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_padding_row_gets_no_embedding_gradient_from_input():
    cfg = tiny_cfg(tie_weights=False)
    enc = AWDLSTM(cfg)
    out, _ = enc(torch.tensor([[5, 1, 1, 7]]))
    out.sum().backward()
    assert (enc.embedding.weight.grad[cfg.pad_idx] == 0).all()
    assert enc.embedding.weight.grad[5].abs().sum() > 0


def test_ar_tar_loss_hand_example():
    raw = torch.tensor([[[1.0, 0.0], [3.0, 2.0]]])  # [B=1, T=2, H=2]
    dropped = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])
    # AR: mean(dropped^2) = (4 + 0 + 0 + 4) / 4 = 2; TAR: mean((raw[1]-raw[0])^2) = (4 + 4) / 2 = 4
    assert ar_tar_loss(raw, dropped, alpha=1.0, beta=0.0).item() == pytest.approx(2.0)
    assert ar_tar_loss(raw, dropped, alpha=0.0, beta=1.0).item() == pytest.approx(4.0)
    assert ar_tar_loss(raw, dropped).item() == pytest.approx(2.0 * 2.0 + 1.0 * 4.0)
    # one time step: no TAR term
    assert ar_tar_loss(raw[:, :1], dropped[:, :1], alpha=0.0).item() == 0.0
    raw_g = raw.clone().requires_grad_()
    ar_tar_loss(raw_g, dropped).backward()
    assert raw_g.grad is not None


def test_config_is_plain_dataclass():
    cfg = tiny_cfg()
    assert dataclasses.replace(cfg, drop_mult=0.1).drop_mult == 0.1
