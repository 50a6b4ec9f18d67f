"""TextClassifier: chunked reading, padding invariance, pooling masks, max_len, layer groups."""
from __future__ import annotations

import json

import pytest
import torch

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import PRESETS, AWDLSTM, AWDLSTMConfig
from ulmfit.models.classifier import ClassifierConfig, PoolingHead, TextClassifier, concat_pool

V, PAD = 30, 1


def make_clf(bptt=4, max_len=1000, seed=0, **kw) -> TextClassifier:
    torch.manual_seed(seed)
    enc = AWDLSTM(AWDLSTMConfig(vocab_size=V, **{**PRESETS["tiny"], "n_layers": 3}))
    clf = TextClassifier(enc, ClassifierConfig(n_classes=3, bptt=bptt, max_len=max_len, **kw))
    # give BatchNorm non-trivial running statistics so eval-mode tests exercise them
    with torch.no_grad():
        for m in clf.head.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return clf.eval()


def batch(docs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(d) for d in docs)
    ids = torch.full((len(docs), T), PAD, dtype=torch.long)
    for i, d in enumerate(docs):
        ids[i, : len(d)] = torch.tensor(d)
    return ids, torch.tensor([len(d) for d in docs])


def rand_doc(n: int, g: torch.Generator) -> list[int]:
    return torch.randint(2, V, (n,), generator=g).tolist()


def test_config_roundtrip_and_errors():
    cfg = ClassifierConfig(n_classes=4, lin_sizes=(20, 10), ps=(0.3, 0.1, 0.1))
    assert ClassifierConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    d = ClassifierConfig(n_classes=2)
    assert (d.lin_sizes, d.ps, d.bptt, d.max_len) == ((50,), (0.4, 0.1), 72, 1440)
    with pytest.raises(UlmfitError, match="ps"):
        ClassifierConfig(n_classes=2, lin_sizes=(50,), ps=(0.4,))
    with pytest.raises(UlmfitError, match="unknown"):
        ClassifierConfig.from_dict({"n_classes": 2, "max_length": 3})


def test_head_structure():
    head = PoolingHead(16, ClassifierConfig(n_classes=3, lin_sizes=(20,), ps=(0.4, 0.1)))
    kinds = [type(m).__name__ for m in head.layers]
    assert kinds == ["BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert head.layers[0].num_features == 48 and head.layers[-1].out_features == 3
    assert [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)] == [0.4, 0.1]


def test_concat_pool_ignores_masked_positions():
    out = torch.tensor(
        [[[1.0, -5.0], [3.0, -1.0], [100.0, 100.0]],  # last position masked: must not count
         [[-100.0, 7.0], [2.0, 4.0], [4.0, -2.0]]],  # first position masked
    )
    mask = torch.tensor([[True, True, False], [False, True, True]])
    pooled = concat_pool(out, mask)
    expected = torch.tensor(
        [[3.0, -1.0, 3.0, -1.0, 2.0, -3.0],
         [4.0, -2.0, 4.0, 4.0, 3.0, 1.0]]
    )
    torch.testing.assert_close(pooled, expected)
    # all-negative values with padding zeros elsewhere: max is not fooled by the masked zeros
    neg = torch.full((1, 3, 2), -2.0)
    neg[0, 2] = 0.0
    assert concat_pool(neg, torch.tensor([[True, True, False]]))[0, 2:4].tolist() == [-2.0, -2.0]


def test_chunked_encoding_equals_one_pass():
    g = torch.Generator().manual_seed(0)
    docs = [rand_doc(n, g) for n in (13, 9, 4, 1)]
    ids, lengths = batch(docs)
    chunked, one_pass = make_clf(bptt=4), make_clf(bptt=1000)
    with torch.no_grad():
        torch.testing.assert_close(chunked.features(ids, lengths), one_pass.features(ids, lengths))
        a, b = chunked(ids, lengths), one_pass(ids, lengths)
        # and both equal pooling the plain encoder output over the real tokens
        out, _ = one_pass.encoder(ids)
        mask = torch.arange(ids.size(1))[None, :] < lengths[:, None]
        torch.testing.assert_close(one_pass.features(ids, lengths), concat_pool(out, mask))
    torch.testing.assert_close(a, b)
    assert a.shape == (4, 3)


def test_chunked_gradient_flows_through_carried_state():
    g = torch.Generator().manual_seed(1)
    ids, lengths = batch([rand_doc(12, g), rand_doc(5, g)])
    clf = make_clf(bptt=4, max_len=3)  # only the last 3 tokens are pooled
    clf.encoder.embedding.weight.grad = None
    clf(ids, lengths).sum().backward()
    grad = clf.encoder.embedding.weight.grad
    # the first token of the long document is only in chunk 0, far from the pooled tail
    assert grad[ids[0, 0]].abs().sum() > 0


def test_padding_invariance():
    g = torch.Generator().manual_seed(2)
    docs = [rand_doc(n, g) for n in (17, 11, 6, 3)]
    clf = make_clf(bptt=5)
    with torch.no_grad():
        together = clf(*batch(docs))
        for i, d in enumerate(docs):
            alone = clf(*batch([d]))
            torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-5)
        # padding content does not matter either
        ids, lengths = batch(docs)
        ids2 = ids.clone()
        ids2[ids2 == PAD] = 7
        torch.testing.assert_close(clf(ids2, lengths), together)


def test_input_order_is_kept():
    g = torch.Generator().manual_seed(3)
    docs = [rand_doc(n, g) for n in (3, 14, 7, 9)]  # not sorted
    clf = make_clf(bptt=4)
    with torch.no_grad():
        unsorted = clf(*batch(docs))
        order = [1, 3, 2, 0]
        sorted_ = clf(*batch([docs[i] for i in order]))
    torch.testing.assert_close(unsorted[order], sorted_, rtol=1e-5, atol=1e-5)


def test_max_len_keeps_only_last_tokens():
    g = torch.Generator().manual_seed(4)
    long_doc, short_doc = rand_doc(23, g), rand_doc(4, g)
    clf = make_clf(bptt=4, max_len=6)
    ids, lengths = batch([long_doc, short_doc])
    with torch.no_grad():
        feats = clf.features(ids, lengths)
        full_out, _ = clf.encoder(ids)  # eval: one pass equals the chunked reading
    window = torch.zeros(2, 23, dtype=torch.bool)
    window[0, 17:23] = True  # the long document's last 6 tokens
    window[1, :4] = True  # the short one is shorter than max_len: all of it
    torch.testing.assert_close(feats, concat_pool(full_out, window))
    # the first 17 tokens of the long document are not pooled ...
    assert not torch.allclose(feats[0], concat_pool(full_out[:1], torch.ones(1, 23, dtype=torch.bool))[0])
    # ... but they still build the state: changing one changes the pooled features
    ids2 = ids.clone()
    ids2[0, 15] = 2 if ids[0, 15] != 2 else 3
    with torch.no_grad():
        assert (clf.features(ids2, lengths)[0] - feats[0]).abs().max() > 1e-6


def test_finished_rows_are_not_computed():
    g = torch.Generator().manual_seed(5)
    ids, lengths = batch([rand_doc(12, g), rand_doc(3, g), rand_doc(2, g)])
    clf = make_clf(bptt=4)
    seen = []
    clf.encoder.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        clf(ids, lengths)
    assert seen == [(3, 4), (1, 4), (1, 4)]


def test_bad_lengths_raise():
    clf = make_clf()
    with pytest.raises(UlmfitError):
        clf(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 0]))
    with pytest.raises(UlmfitError):
        clf(torch.ones(2, 3, dtype=torch.long), torch.tensor([4, 1]))


def test_train_mode_backward_and_layer_groups():
    g = torch.Generator().manual_seed(6)
    clf = make_clf(bptt=3).train()
    ids, lengths = batch([rand_doc(n, g) for n in (8, 5, 5, 2)])
    clf(ids, lengths).logsumexp(1).sum().backward()
    for name, p in clf.named_parameters():
        assert p.grad is not None, name
    groups = clf.layer_groups()
    assert len(groups) == 1 + 3 + 1
    flat = [p for gr in groups for p in gr]
    assert len(flat) == len({id(p) for p in flat})
    assert {id(p) for p in flat} == {id(p) for p in clf.parameters()}
    assert groups[0] == [clf.encoder.embedding.weight]
    assert groups[-1] == list(clf.head.parameters())
