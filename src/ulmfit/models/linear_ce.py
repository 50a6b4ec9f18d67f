"""The language model's output layer and its cross-entropy as one pass over row chunks.

`F.cross_entropy(h @ W.T + b, y)` on a [N, V] logit matrix (N = bs * bptt = 2,240 tokens, V = 10k-30k
words) makes five passes over N x V floats, 85-270 MB that no CPU cache holds: log_softmax
forward, the loss, a zero-filled gradient for the loss, its scatter, log_softmax backward. On a
2-core CPU those passes took as long as the decoder's three matrix products (profile of one LM
step, `small` preset, docs/BENCHMARKS.md). `linear_cross_entropy` computes the same loss and the
same gradients chunk by chunk (`chunk` rows of logits, ~1-2 MB, stay in cache): logits, their
log-sum-exp, the loss, then at once the gradient `softmax - onehot` and its three products
(for h, W and b), kept for `backward`. The [N, V] logit matrix never exists.

Results equal `F.cross_entropy(F.linear(h, W, b), y)` up to float rounding (tests/test_linear_ce.py).
Under CPU/CUDA autocast the products run in the autocast dtype and the softmax in fp32, as
autocast does for `F.linear` + `F.cross_entropy`; W's and b's gradients are accumulated in fp32.
"""
from __future__ import annotations

import torch
from torch import Tensor


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, chunk: int,
                compute_dtype: torch.dtype) -> Tensor:
        n = h.shape[0]
        w = weight.to(compute_dtype)
        b = None if bias is None else bias.to(compute_dtype)
        hc_all = h.to(compute_dtype)
        grad_h = torch.empty(h.shape, dtype=compute_dtype, device=h.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_b = None if bias is None else torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        low = compute_dtype != torch.float32
        for s in range(0, n, chunk):
            hc, t = hc_all[s:s + chunk], target[s:s + chunk]
            logits = (torch.addmm(b, hc, w.t()) if b is not None else hc @ w.t()).float()  # [c, V]
            lse = torch.logsumexp(logits, 1)
            rows = torch.arange(t.shape[0], device=t.device)
            total += (lse - logits[rows, t]).sum()
            p = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place
            p[rows, t] -= 1.0  # d(sum of losses) / d logits
            if low:
                p_low = p.to(compute_dtype)
                torch.mm(p_low, w, out=grad_h[s:s + chunk])
                grad_w += p_low.t() @ hc
            else:
                torch.mm(p, w, out=grad_h[s:s + chunk])
                grad_w.addmm_(p.t(), hc)
            if grad_b is not None:
                grad_b += p.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b if grad_b is not None else torch.empty(0))
        ctx.meta = (n, h.dtype, weight.dtype, bias is not None)
        return total / n

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        n, h_dtype, w_dtype, has_bias = ctx.meta
        scale = grad_out / n
        gb = (grad_b * scale).to(w_dtype) if has_bias else None
        return (grad_h * scale).to(h_dtype), (grad_w * scale).to(w_dtype), gb, None, None, None


def linear_cross_entropy(h: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, chunk: int = 64) -> Tensor:
    """Mean cross-entropy of `h @ weight.T + bias` [N, V] against `target` [N] (class ids), without
    materialising the logits. h [N, E], weight [V, E], bias [V] or None. Differentiable in h,
    weight and bias; `chunk` rows at a time (64 x 30k fp32 logits = 7.7 MB)."""
    if h.dim() != 2 or target.shape != h.shape[:1]:
        raise ValueError(f"linear_cross_entropy: h [N, E] and target [N], got {tuple(h.shape)} and {tuple(target.shape)}")
    device = h.device.type
    compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    with torch.autocast(device, enabled=False):
        return _LinearCrossEntropy.apply(h, weight, bias, target, chunk, compute)
