import numpy as np
import pytest
import torch

from ulmfit.data.lm_loader import LMLoader
from ulmfit.errors import UlmfitError
from ulmfit.text.token_docs import TokenDocs

BOS = 2


def make_docs(n_docs=40, seed=0):
    """Doc i is [BOS, 1000*i+10, 1000*i+11, ...]: every token says which doc and position it is."""
    rng = np.random.default_rng(seed)
    docs = [[BOS] + [1000 * i + 10 + j for j in range(rng.integers(0, 30))] for i in range(n_docs)]
    return TokenDocs.from_arrays(docs)


def rows_of(loader):
    """Concatenate all batches column-wise: row r of the epoch's stream layout, inputs and targets."""
    xs, ys = zip(*loader)
    return torch.cat(xs, 1).numpy(), torch.cat(ys, 1).numpy()


def test_shapes_dtype_len_and_shift():
    docs = make_docs()
    dl = LMLoader(docs, bs=4, bptt=7, shuffle=True)
    batches = list(dl)
    assert len(batches) == len(dl) == -(-dl.row_len // 7)
    for x, y in batches:
        assert x.dtype == torch.int64 and y.dtype == torch.int64 and x.shape == y.shape and x.shape[0] == 4
        assert x.is_contiguous() and y.is_contiguous()
    x, y = rows_of(dl)
    assert x.shape == (4, dl.row_len)
    assert (x[:, 1:] == y[:, :-1]).all()  # targets are the inputs shifted by one


def test_no_shuffle_reproduces_stream():
    docs = make_docs()
    bs = 5
    dl = LMLoader(docs, bs=bs, bptt=6, shuffle=False)
    x, y = rows_of(dl)
    L = (docs.n_tokens - 1) // bs
    stream = np.asarray(docs.ids)
    assert (x.reshape(-1) == stream[:bs * L]).all()  # only the (N-1) % bs tail is not read
    assert (y.reshape(-1) == stream[1:bs * L + 1]).all()
    assert dl.n_tokens == docs.n_tokens


def test_shuffle_keeps_docs_contiguous_and_in_order():
    docs = make_docs(n_docs=60)
    dl = LMLoader(docs, bs=1, bptt=9, shuffle=True, seed=3)
    x, y = rows_of(dl)
    stream = np.concatenate([x[0], y[0, -1:]])
    assert not (stream == np.asarray(docs.ids)[:len(stream)]).all()  # docs were permuted
    order = np.random.default_rng([3, 0]).permutation(len(docs))
    expected = np.concatenate([docs[i] for i in order])
    assert (stream == expected[:len(stream)]).all()  # each doc whole and in order


def test_determinism_per_seed_and_epoch():
    docs = make_docs()
    a, b = LMLoader(docs, bs=3, bptt=5, seed=1), LMLoader(docs, bs=3, bptt=5, seed=1)
    assert (rows_of(a)[0] == rows_of(b)[0]).all()
    first = rows_of(a)[0]
    a.set_epoch(1)
    assert not (rows_of(a)[0] == first).all()
    a.set_epoch(0)
    assert (rows_of(a)[0] == first).all()
    assert not (rows_of(LMLoader(docs, bs=3, bptt=5, seed=2))[0] == first).all()


def test_memmapped_docs(tmp_path):
    docs = make_docs()
    docs.save(tmp_path / "lm")
    mm = TokenDocs.load(tmp_path / "lm", mmap=True)
    assert isinstance(mm.ids, np.memmap)
    for shuffle in (False, True):
        a = rows_of(LMLoader(docs, bs=4, bptt=8, shuffle=shuffle))
        b = rows_of(LMLoader(mm, bs=4, bptt=8, shuffle=shuffle))
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


def test_variable_bptt_bounds_and_coverage():
    docs = make_docs(n_docs=200)
    bptt = 20
    dl = LMLoader(docs, bs=4, bptt=bptt, variable_bptt=True, shuffle=False)
    seqs = [x.shape[1] for x, _ in dl]
    assert len(seqs) == len(dl) and sum(seqs) == dl.row_len
    assert all(s >= 5 for s in seqs[:-1]) and 1 <= seqs[-1]
    assert max(seqs) <= bptt + 30 and len(set(seqs)) > 3
    assert (rows_of(dl)[0].reshape(-1) == np.asarray(docs.ids)[:4 * dl.row_len]).all()
    dl.set_epoch(1)
    assert [x.shape[1] for x, _ in dl] != seqs


def test_empty_documents_are_skipped():
    docs = TokenDocs.from_arrays([[BOS, 5, 6], [], [BOS, 7], [], [BOS, 8, 9, 10]])
    x, y = rows_of(LMLoader(docs, bs=2, bptt=2, shuffle=False))
    assert x.tolist() == [[2, 5, 6, 2], [7, 2, 8, 9]]


def test_too_small_corpus():
    with pytest.raises(UlmfitError, match="only 10 tokens.*smaller batch size"):
        LMLoader(TokenDocs.from_arrays([[BOS] + list(range(9))]), bs=64)
