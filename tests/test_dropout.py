"""The three AWD-LSTM dropouts: train vs eval behaviour, mask shapes, gradients, parameters."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from ulmfit.models.dropout import LockedDropout, WeightDropLSTM, embedding_dropout


def test_embedding_dropout_drops_whole_words_and_scales_survivors():
    torch.manual_seed(0)
    V, E, p = 50, 8, 0.5
    weight = torch.randn(V, E)
    ids = torch.arange(V).repeat(4, 3)  # every word 12 times, at many positions and rows
    out = embedding_dropout(weight, ids, p, training=True)
    assert out.shape == (4, 3 * V, E)
    plain = weight[ids]
    dropped = (out == 0).all(-1)
    kept = ~dropped
    assert dropped.any() and kept.any()
    # survivors are scaled by exactly 1 / (1 - p); dropped rows are zero in every feature
    torch.testing.assert_close(out[kept], plain[kept] / (1 - p))
    # a word is dropped everywhere or nowhere
    for w in range(V):
        d = dropped[ids == w]
        assert d.all() or not d.any()


def test_embedding_dropout_eval_and_p0_are_plain_lookup():
    weight, ids = torch.randn(20, 4), torch.randint(0, 20, (3, 7))
    torch.testing.assert_close(embedding_dropout(weight, ids, 0.5, training=False), weight[ids])
    torch.testing.assert_close(embedding_dropout(weight, ids, 0.0, training=True), weight[ids])


def test_embedding_dropout_gradient_zero_for_dropped_words_and_padding():
    torch.manual_seed(1)
    weight = torch.randn(30, 4, requires_grad=True)
    ids = torch.randint(0, 30, (5, 9))
    ids[0, 0] = 1
    out = embedding_dropout(weight, ids, 0.5, training=True, padding_idx=1)
    out.sum().backward()
    used = torch.zeros(30, dtype=torch.bool)
    used[ids.flatten()] = True
    dropped_words = ids[(out == 0).all(-1)].unique()
    assert (weight.grad[dropped_words] == 0).all()
    assert (weight.grad[1] == 0).all()  # padding_idx gets no gradient
    assert (weight.grad[~used] == 0).all()


def test_locked_dropout_same_mask_over_time_and_identity_in_eval():
    torch.manual_seed(0)
    ld = LockedDropout(0.5)
    x = torch.ones(6, 20, 10)
    y = ld(x)
    # each (row, feature) is either 0 at every step or 2 at every step
    assert ((y == 0) | (y == 2)).all()
    assert (y == y[:, :1, :]).all()
    assert (y == 0).any() and (y == 2).any()
    # masks differ between rows
    assert not (y[0] == y[1]).all() or not (y[1] == y[2]).all()
    ld.eval()
    assert ld(x) is x
    assert LockedDropout(0.0).train()(x) is x


def _twin_lstm(wd: WeightDropLSTM) -> nn.LSTM:
    ref = nn.LSTM(wd.input_size, wd.hidden_size, batch_first=True)
    sd = dict(wd.module.state_dict())
    sd["weight_hh_l0"] = wd.weight_hh_l0_raw.detach().clone()
    ref.load_state_dict(sd)
    return ref


def test_weight_drop_lstm_eval_is_plain_lstm_and_deterministic():
    torch.manual_seed(0)
    wd = WeightDropLSTM(5, 7, weight_p=0.5).eval()
    x = torch.randn(3, 11, 5)
    out, (h, c) = wd(x)
    assert out.shape == (3, 11, 7) and h.shape == c.shape == (1, 3, 7)
    ref_out, (ref_h, ref_c) = _twin_lstm(wd)(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    out2, _ = wd(x, (h, c))
    torch.testing.assert_close(out2, _twin_lstm(wd)(x, (h, c))[0])
    torch.testing.assert_close(wd(x)[0], out)


def test_weight_drop_lstm_train_uses_masked_hidden_weight():
    torch.manual_seed(0)
    wd = WeightDropLSTM(5, 7, weight_p=0.5).train()
    x = torch.randn(3, 11, 5)
    a, b = wd(x)[0], wd(x)[0]
    assert not torch.allclose(a, b)  # a new mask each call
    # Replay the mask: same RNG state -> same dropped weight; the LSTM run with exactly that
    # weight (one matrix for all time steps) reproduces the output.
    rng = torch.get_rng_state()
    out, _ = wd(x)
    torch.set_rng_state(rng)
    dropped = wd.dropped_weight().detach()
    raw = wd.weight_hh_l0_raw.detach()
    zero = dropped == 0
    assert zero.any() and (~zero).any()
    torch.testing.assert_close(dropped[~zero], raw[~zero] / 0.5)
    ref = _twin_lstm(wd)
    with torch.no_grad():
        ref.weight_hh_l0.copy_(dropped)
    torch.testing.assert_close(out, ref(x)[0])


def test_weight_drop_lstm_gradient_reaches_raw_weight_and_no_dead_parameter():
    torch.manual_seed(0)
    wd = WeightDropLSTM(5, 7, weight_p=0.3).train()
    names = dict(wd.named_parameters())
    assert sorted(names) == ["module.bias_hh_l0", "module.bias_ih_l0", "module.weight_ih_l0", "weight_hh_l0_raw"]
    assert "module.weight_hh_l0" not in wd.state_dict()
    out, (h, c) = wd(torch.randn(2, 6, 5))
    (out.sum() + h.sum()).backward()
    for name, p in wd.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the dropped weight of the last call is not kept alive by the inner LSTM, so the module
    # deep-copies (best-checkpoint keeping) and the optimizer sees each weight once
    assert wd.module.weight_hh_l0.numel() == 0
    copy.deepcopy(wd)
    opt = torch.optim.SGD(wd.parameters(), lr=0.1)
    before = wd.weight_hh_l0_raw.detach().clone()
    opt.step()
    assert not torch.equal(before, wd.weight_hh_l0_raw)


def test_weight_drop_lstm_no_warnings_packed_input_and_dtype_moves():
    torch.manual_seed(0)
    wd = WeightDropLSTM(4, 6, weight_p=0.2).eval()
    x = torch.randn(3, 5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = wd(x)
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True)
        pout, (h, _) = wd(packed)
    assert isinstance(pout, nn.utils.rnn.PackedSequence)
    padded, _ = nn.utils.rnn.pad_packed_sequence(pout, batch_first=True)
    torch.testing.assert_close(padded[0], out[0])
    torch.testing.assert_close(h[0, 1], wd(x[1:2, :3])[1][0][0, 0])
    # after a dtype move (which rebuilds the LSTM's flat-weight list) it still runs, twice, in
    # eval and in train
    wd64 = wd.double()
    torch.testing.assert_close(wd64(x.double())[0], out.double())
    torch.testing.assert_close(wd64(x.double())[0], out.double())
    assert wd64.train()(x.double())[0].dtype == torch.float64


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_weight_drop_lstm_state_carry_in_eval(p):
    torch.manual_seed(0)
    wd = WeightDropLSTM(4, 6, weight_p=p).eval()
    x = torch.randn(2, 10, 4)
    full, (h, c) = wd(x)
    a, s = wd(x[:, :4])
    b, (h2, c2) = wd(x[:, 4:], s)
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    torch.testing.assert_close(h2, h)
    torch.testing.assert_close(c2, c)


def test_weight_drop_state_dict_keys_stable_after_eval_forward():
    """Regression: an eval forward must not register the raw weight inside the inner LSTM."""
    m = WeightDropLSTM(4, 6, weight_p=0.5)
    keys = set(m.state_dict())
    m.eval()
    m(torch.randn(2, 3, 4))
    m.train()
    m(torch.randn(2, 3, 4))
    assert set(m.state_dict()) == keys
    assert len(list(m.parameters())) == len(keys)
