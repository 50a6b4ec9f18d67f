"""The fused decoder + cross-entropy equals `F.cross_entropy(F.linear(...))` in value and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ulmfit.models.linear_ce import linear_cross_entropy


def _grads(fn, *leaves):
    for t in leaves:
        t.grad = None
    loss = fn()
    (loss * 1.7).backward()  # a non-unit upstream gradient
    return [loss.detach()] + [t.grad.clone() for t in leaves]


@pytest.mark.parametrize("n,chunk,bias", [(37, 8, True), (64, 64, True), (5, 64, False), (100, 33, True)])
def test_matches_reference_in_fp32(n, chunk, bias):
    torch.manual_seed(n)
    h = torch.randn(n, 6, requires_grad=True)
    w = torch.randn(11, 6, requires_grad=True)
    b = torch.randn(11, requires_grad=True) if bias else None
    y = torch.randint(0, 11, (n,))
    leaves = [h, w] + ([b] if bias else [])
    ref = _grads(lambda: F.cross_entropy(F.linear(h, w, b), y), *leaves)
    got = _grads(lambda: linear_cross_entropy(h, w, b, y, chunk=chunk), *leaves)
    for r, g in zip(ref, got):
        assert g.dtype == r.dtype and torch.allclose(r, g, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_is_close_and_grads_fp32():
    torch.manual_seed(0)
    h = torch.randn(50, 16, requires_grad=True)
    w = (torch.randn(30, 16) * 0.3).requires_grad_()
    b = torch.zeros(30, requires_grad=True)
    y = torch.randint(0, 30, (50,))
    ref = _grads(lambda: F.cross_entropy(F.linear(h, w, b), y), h, w, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _grads(lambda: linear_cross_entropy(h, w, b, y, chunk=16), h, w, b)
    assert all(g.dtype == torch.float32 for g in got)
    assert abs(float(ref[0] - got[0])) < 0.05
    for r, g in zip(ref[1:], got[1:]):
        assert torch.allclose(r, g, atol=0.02), float((r - g).abs().max())


def test_tied_language_model_loss_matches_logits_path():
    """LanguageModel.cross_entropy (what LMTask trains with) equals the logits' cross-entropy, and
    the tied embedding/decoder matrix receives the same gradient."""
    from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel

    torch.manual_seed(0)
    lm = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=50)).eval()
    x, y = torch.randint(0, 50, (3, 7)), torch.randint(0, 50, (3, 7))

    def via_logits():
        logits = lm(x)[0]
        return F.cross_entropy(logits.reshape(-1, 50), y.reshape(-1))

    def fused():
        return lm.cross_entropy(lm.features(x)[0], y)

    params = [lm.encoder.embedding.weight, lm.decoder.bias]
    ref, got = _grads(via_logits, *params), _grads(fused, *params)
    for r, g in zip(ref, got):
        assert torch.allclose(r, g, atol=1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="h \\[N, E\\] and target \\[N\\]"):
        linear_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(5, 4), None, torch.zeros(2, dtype=torch.long))
