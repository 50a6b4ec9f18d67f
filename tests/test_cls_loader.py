import numpy as np
import torch

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.text.token_docs import TokenDocs

PAD = 1


def make_docs(n=1000, seed=0):
    """Doc i is [2, i+10, i+10, ...] (ids >= 2 so they never equal PAD) with a random length."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, n)
    return TokenDocs.from_arrays([np.full(k, i + 10) for i, k in enumerate(lengths)]), lengths


def pad_fraction(loader):
    real = total = 0
    for b in loader:
        real += int(b.lengths.sum())
        total += b.ids.numel()
    return 1 - real / total


def check_batch(b, docs, max_tokens=None):
    assert b.ids.dtype == b.lengths.dtype == b.index.dtype == torch.int64
    lengths = b.lengths.numpy()
    assert (np.diff(lengths) <= 0).all()  # sorted descending
    assert b.ids.shape == (len(lengths), lengths[0])
    for row, n, i in zip(b.ids.numpy(), lengths, b.index.numpy()):
        doc = docs[int(i)][:max_tokens]
        assert n == len(doc)
        assert (row[:n] == doc).all() and (row[n:] == PAD).all()


def test_every_doc_once_and_padding_correct():
    docs, _ = make_docs()
    labels = np.arange(len(docs)) % 3
    for shuffle in (True, False):
        dl = ClassificationLoader(docs, labels, bs=32, shuffle=shuffle, pad_idx=PAD)
        batches = list(dl)
        assert len(batches) == len(dl) == 32
        seen = np.concatenate([b.index.numpy() for b in batches])
        assert sorted(seen) == list(range(len(docs)))
        for b in batches:
            check_batch(b, docs)
            assert (b.labels.numpy() == labels[b.index.numpy()]).all()


def test_no_shuffle_is_fully_sorted_and_index_restores_order():
    docs, lengths = make_docs()
    dl = ClassificationLoader(docs, bs=50, shuffle=False)
    all_lengths = np.concatenate([b.lengths.numpy() for b in dl])
    assert (np.diff(all_lengths) <= 0).all()
    # put per-row "predictions" (here: the first token) back into document order
    preds = np.empty(len(docs), dtype=np.int64)
    for b in dl:
        assert b.labels is None
        preds[b.index.numpy()] = b.ids[:, 0].numpy()
    assert (preds == np.arange(len(docs)) + 10).all()


def test_sortish_pads_much_less_than_random():
    docs, _ = make_docs(n=5000)
    sortish = pad_fraction(ClassificationLoader(docs, bs=32, shuffle=True))
    rng = np.random.default_rng(0)
    dl = ClassificationLoader(docs, bs=32, shuffle=False)
    perm = rng.permutation(len(docs))
    random_pad = 1 - docs.lengths.sum() / sum(
        len(b) * docs.lengths[b].max() for b in (perm[i:i + 32] for i in range(0, len(perm), 32)))
    assert sortish < 0.1 < 0.3 < random_pad
    assert pad_fraction(dl) < sortish + 0.01  # fully sorted is the floor


def test_longest_batch_first_and_batches_shuffled():
    docs, lengths = make_docs(n=5000)
    dl = ClassificationLoader(docs, bs=32, shuffle=True)
    batches = list(dl)
    assert batches[0].lengths[0] == lengths.max()
    firsts = [int(b.lengths[0]) for b in batches[1:]]
    assert firsts != sorted(firsts, reverse=True)  # not globally sorted: batches were shuffled


def test_determinism_and_epochs():
    docs, _ = make_docs()
    order = lambda dl: np.concatenate([b.index.numpy() for b in dl])  # noqa: E731
    a, b = ClassificationLoader(docs, bs=16, seed=4), ClassificationLoader(docs, bs=16, seed=4)
    assert (order(a) == order(b)).all()
    first = order(a)
    a.set_epoch(1)
    assert not (order(a) == first).all()
    a.set_epoch(0)
    assert (order(a) == first).all()


def test_max_tokens_keeps_the_first_tokens():
    docs = TokenDocs.from_arrays([[2, 5, 6, 7, 8], [2, 9], [2, 3, 4]])
    dl = ClassificationLoader(docs, bs=8, shuffle=False, max_tokens=3, pad_idx=PAD)
    (b,) = list(dl)
    assert b.ids.tolist() == [[2, 5, 6], [2, 3, 4], [2, 9, PAD]]
    assert b.lengths.tolist() == [3, 3, 2] and b.index.tolist() == [0, 2, 1]
    check_batch(b, docs, max_tokens=3)


def test_last_batch_smaller_and_memmap(tmp_path):
    docs, _ = make_docs(n=70)
    docs.save(tmp_path / "d")
    mm = TokenDocs.load(tmp_path / "d", mmap=True)
    sizes = [len(b.index) for b in ClassificationLoader(mm, bs=32, shuffle=True)]
    assert sorted(sizes) == [6, 32, 32]


def test_training_batches_never_hold_a_single_document():
    from ulmfit.data.cls_loader import ClassificationLoader
    from ulmfit.text.token_docs import TokenDocs

    docs = TokenDocs.from_arrays([[2] * (i % 7 + 1) for i in range(17)])  # 17 = 2 * 8 + 1
    loader = ClassificationLoader(docs, np.zeros(17, dtype=np.int64), bs=8, shuffle=True)
    sizes = [len(b.index) for b in loader]
    assert min(sizes) > 1 and sum(sizes) == 17 and len(sizes) == len(loader)
    assert [len(b.index) for b in ClassificationLoader(docs, None, bs=8, shuffle=False)] == [8, 8, 1]


def test_min_batches_repeats_reshuffled_passes_of_the_data():
    docs = TokenDocs.from_arrays([np.arange(1 + i % 7) + 10 for i in range(20)])
    labels = np.arange(20) % 3
    plain = ClassificationLoader(docs, labels, bs=8, shuffle=True, seed=3)
    more = ClassificationLoader(docs, labels, bs=8, shuffle=True, seed=3, min_batches=7)
    assert len(plain) == 3 and len(more) == 9  # 3 passes of 3 batches
    got = more.batches()
    assert len(got) == 9
    assert [b.tolist() for b in got[:3]] == [b.tolist() for b in plain.batches()]  # first pass unchanged
    counts = np.bincount(np.concatenate(got), minlength=20)
    assert (counts == 3).all()  # every document once per pass
    assert [b.tolist() for b in got[3:6]] != [b.tolist() for b in got[:3]]  # later passes reshuffled
    assert [b.tolist() for b in more.batches()] == [b.tolist() for b in got]  # deterministic
    inference = ClassificationLoader(docs, None, bs=8, shuffle=False, min_batches=7)
    assert len(inference) == 3  # never repeats when predicting
