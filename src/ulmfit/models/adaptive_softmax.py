"""A tied adaptive softmax: the language model's output layer with the cost of a small one.

Grave, Joulin, Cissé, Grangier & Jégou 2017, "Efficient softmax approximation for GPUs" (§3-4):
the vocabulary, sorted by frequency (ours is: `Vocab` puts the special tokens first, then the words
by count), is cut into a head (the `cutoffs[0]` most frequent words) and tail clusters
`[cutoffs[i], cutoffs[i+1])` (the last one ends at the vocabulary size). The head is a softmax over
its words plus one logit per tail cluster; a word of cluster i has

    log p(w | h) = log p_head(cluster i | h) + log softmax_i(w | tail_i(h))

so every token pays for the head, and only the tokens whose target is in cluster i pay for
cluster i (about 10-20 % of the tokens with a 2,000-word head). Tied to the input embedding as in
Baevski & Auli 2019, "Adaptive input representations" (§3.3, "weight sharing"): here every word's
output row IS its embedding row (the encoder's `nn.Embedding` weight, the same storage), so
vocabulary transfer (models/vocab_transfer.py) moves the rows as for the full softmax, and the
classifier, which uses only the encoder, is unchanged. Grave et al.'s reduced tail dimensions
(`div_value`) are not used: with a 128-400-d embedding tied row by row, a tail cluster's cost is
its |cluster| x d word products, which a down-projection of h does not reduce (the rows stay d-d).

Parameters beyond the tied rows:
    bias            [V]        a bias per word (the full decoder's `bias`, same meaning in the head)
    cluster_weight  [k, d]     one output vector per tail cluster (its logit in the head)
    cluster_bias    [k]
    proj            [k, d, d]  per tail cluster, tail_i(h) = h + h @ proj[i] (a residual projection:
                               zeros = identity, and weight decay pulls it towards the identity)

Shapes: h [..., d] -> `forward` / `log_prob` [..., V] exact log-probabilities (they sum to 1 over
the vocabulary; used as the "logits" of evaluation, perplexity, `generate` and ONNX: softmax of
log-probabilities gives back the same probabilities); `loss(h, target)` the mean negative
log-likelihood, computed per cluster on the rows whose target is in it (training).

`init_clusters()` sets each cluster's logit to the first-order expansion at h = 0 of the
log-sum-exp of its words' full-softmax logits `h . E_w + b_w`:
    cluster_bias_i = logsumexp_{w in i} b_w,   cluster_weight_i = sum_{w in i} softmax_i(b)_w E_w
with `proj` at zero (identity). A new model so starts as a uniform distribution over the
vocabulary (zero biases), and a full-softmax LM converted to this head starts at exactly its
distribution at h = 0, with the same gradient there (recipes/toolbox.py `lm_from_pretrained`).
`full_bias()` is the way back: the word biases of the full softmax equal to this head at h = 0
(exact for a vocabulary inside the head; the cluster vectors and projections have no full-softmax
counterpart and are dropped, so adaptive -> full is an approximation, logged as one).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulmfit.models.linear_ce import linear_cross_entropy


def adaptive_cutoffs(cutoffs: tuple[int, ...] | list[int], vocab_size: int) -> tuple[int, ...]:
    """The cutoffs that fall inside a vocabulary of `vocab_size` words (each < vocab_size): the same
    setting then fits any vocabulary; one of at most cutoffs[0] words gets a head only (= full)."""
    return tuple(int(c) for c in cutoffs if 0 < int(c) < vocab_size)


class TiedAdaptiveSoftmax(nn.Module):
    """Adaptive softmax whose word rows are `weight` (the embedding's Parameter when tied).

    vocab_size V, dim d, cutoffs (c_0 < c_1 < ... < c_{k-1} < V): head = words [0, c_0) + k cluster
    logits; tail cluster i = words [c_i, c_{i+1}) (c_k = V). `weight`: the [V, d] Parameter to tie to
    (None: a new one, uniform like the embedding)."""

    def __init__(self, vocab_size: int, dim: int, cutoffs: tuple[int, ...], weight: nn.Parameter | None = None):
        super().__init__()
        cutoffs = tuple(int(c) for c in cutoffs)
        if not cutoffs or list(cutoffs) != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= vocab_size:
            raise ValueError(f"TiedAdaptiveSoftmax: cutoffs must increase strictly within (0, {vocab_size}), got {cutoffs}")
        self.vocab_size, self.dim, self.cutoffs = vocab_size, dim, cutoffs
        if weight is None:
            weight = nn.Parameter(torch.empty(vocab_size, dim).uniform_(-0.1, 0.1))
        if tuple(weight.shape) != (vocab_size, dim):
            raise ValueError(f"TiedAdaptiveSoftmax: weight {tuple(weight.shape)} is not [{vocab_size}, {dim}]")
        self.weight = weight
        k = len(cutoffs)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.cluster_weight = nn.Parameter(torch.zeros(k, dim))
        self.cluster_bias = nn.Parameter(torch.zeros(k))
        self.proj = nn.Parameter(torch.zeros(k, dim, dim))
        self.init_clusters()

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """[(lo, hi)] word ranges of the tail clusters."""
        edges = list(self.cutoffs) + [self.vocab_size]
        return list(zip(edges[:-1], edges[1:]))

    @torch.no_grad()
    def init_clusters(self) -> None:
        """Cluster logits from the words' rows and biases (the module doc); projections at identity."""
        for i, (lo, hi) in enumerate(self.bounds):
            b = self.bias[lo:hi].float()
            self.cluster_bias[i] = torch.logsumexp(b, 0)
            self.cluster_weight[i] = (torch.softmax(b, 0) @ self.weight[lo:hi].float()).to(self.cluster_weight.dtype)
        self.proj.zero_()

    @torch.no_grad()
    def full_bias(self) -> Tensor:
        """[V] word biases of the full softmax that equals this head at h = 0: a tail word's bias plus
        its cluster's offset, cluster_bias_i - logsumexp_{w in i} bias_w. A tail cluster's softmax
        ignores a constant shift, so this head with these biases is the same model at every h: the
        form in which biases move between vocabularies and heads (recipes/toolbox.py)."""
        b = self.bias.detach().clone()
        for i, (lo, hi) in enumerate(self.bounds):
            b[lo:hi] += self.cluster_bias[i] - torch.logsumexp(self.bias[lo:hi].float(), 0).to(b.dtype)
        return b

    def _head(self) -> tuple[Tensor, Tensor]:
        """Head rows [c_0 + k, d] and bias [c_0 + k]: the head words', then one per cluster."""
        c0 = self.cutoffs[0]
        return torch.cat([self.weight[:c0], self.cluster_weight]), torch.cat([self.bias[:c0], self.cluster_bias])

    def _tail_input(self, h: Tensor, i: int) -> Tensor:
        return h + h @ self.proj[i].to(h.dtype)

    def log_prob(self, h: Tensor) -> Tensor:
        """h [..., d] -> exact log-probabilities [..., V] (each row sums to 1 in probability)."""
        shape = h.shape[:-1]
        h = h.reshape(-1, self.dim)
        w_head, b_head = self._head()
        head = F.log_softmax(F.linear(h, w_head, b_head).float(), -1)  # [N, c_0 + k]
        c0 = self.cutoffs[0]
        parts = [head[:, :c0]]
        for i, (lo, hi) in enumerate(self.bounds):
            tail = F.linear(self._tail_input(h, i), self.weight[lo:hi], self.bias[lo:hi]).float()
            parts.append(head[:, c0 + i:c0 + i + 1] + F.log_softmax(tail, -1))
        return torch.cat(parts, -1).reshape(*shape, self.vocab_size)

    forward = log_prob

    def loss(self, h: Tensor, target: Tensor) -> Tensor:
        """Mean negative log-likelihood of `target` [N] under h [N, d]: the head for every row, cluster
        i only for the rows whose target is in it (each part fused, models/linear_ce.py)."""
        n, c0 = target.shape[0], self.cutoffs[0]
        head_target = target.clone()
        w_head, b_head = self._head()
        in_cluster = []
        for i, (lo, hi) in enumerate(self.bounds):
            rows = ((target >= lo) & (target < hi)).nonzero().squeeze(1)
            head_target[rows] = c0 + i
            in_cluster.append(rows)
        total = linear_cross_entropy(h, w_head, b_head, head_target) * n
        for i, ((lo, hi), rows) in enumerate(zip(self.bounds, in_cluster)):
            if rows.numel():
                total = total + linear_cross_entropy(self._tail_input(h[rows], i), self.weight[lo:hi],
                                                     self.bias[lo:hi], target[rows] - lo) * rows.numel()
        return total / n

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, dim={self.dim}, cutoffs={self.cutoffs}"
