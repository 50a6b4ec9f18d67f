"""Long documents on the transformer backbone with bounded memory (models/transformer.py
`encode_chunked`, `MAX_WINDOWS_PER_CALL`; data/cls_loader.py `max_batch_pieces`): encoding a batch's
windows a few at a time gives the same features, the same gradients (checkpointed calls, dropout
included), keeps fewer activations for backward, and prediction batches by word pieces give the
same probabilities. Tiny random BERT (tests/tiny_bert.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_bert import make_tiny_bert  # noqa: E402
from ulmfit.data.cls_loader import ClassificationLoader  # noqa: E402
from ulmfit.models import transformer as tmod  # noqa: E402
from ulmfit.models.classifier import ClassifierConfig  # noqa: E402
from ulmfit.models.transformer import TransformerClassifier, TransformerConfig, load_pretrained_backbone  # noqa: E402

LONG = [" ".join(["the flight was late and the crew was rude"] * k) for k in (9, 5, 1, 3)]  # 1 to ~9 windows


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def classifier(folder):
    bb, text = load_pretrained_backbone(folder, TransformerConfig(window=12, overlap=3, blocks_per_group=1))
    torch.manual_seed(0)
    return TransformerClassifier(bb, ClassifierConfig(n_classes=2)), text


def long_batch(text):
    docs = text.encode_many(text.tokenize_many(LONG))
    return next(iter(ClassificationLoader(docs, np.array([0, 1, 0, 1]), bs=4, shuffle=False, pad_idx=text.pad_id)))


def test_chunked_encoding_equals_one_call(tiny_folder):
    model, text = classifier(tiny_folder)
    bb, b = model.backbone.eval(), long_batch(text)
    assert bb.n_windows(b.lengths.tolist()) > 10
    bb.max_windows = 10**6
    with torch.no_grad():
        whole, mask = bb.encode(b.ids, b.lengths)
    for n in (1, 3, 7):
        bb.max_windows = n
        with torch.no_grad():
            chunked, mask2 = bb.encode(b.ids, b.lengths)
        assert torch.equal(mask, mask2)
        assert torch.equal(chunked, whole)  # bit for bit: every window is computed on its own


def grads(model, b, max_windows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model.backbone.max_windows = max_windows
    torch.manual_seed(seed)
    F.cross_entropy(model(b.ids, b.lengths), b.labels).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_chunked_training_gives_the_same_gradients(tiny_folder, monkeypatch):
    model, text = classifier(tiny_folder)
    b = long_batch(text)
    # No dropout (eval mode, gradients on): chunked and checkpointed = one call, parameter by parameter
    # (to float rounding: a weight's gradient is summed chunk by chunk; measured difference ~1e-7).
    model.eval()
    whole, chunked = grads(model, b, 10**6), grads(model, b, 3)
    assert whole.keys() == chunked.keys() and any(n.startswith("backbone.bert.encoder") for n in whole)
    for n in whole:
        torch.testing.assert_close(chunked[n], whole[n], atol=1e-6, rtol=1e-5, msg=n)
    # With dropout: the checkpoint's recomputation replays the same dropout masks, so the gradients
    # equal those of the same chunks kept in memory (no checkpoint).
    model.train()
    checkpointed = grads(model, b, 3, seed=1)
    monkeypatch.setattr(tmod, "checkpoint", lambda f, *a, use_reentrant: f(*a))
    kept = grads(model, b, 3, seed=1)
    for n in kept:
        torch.testing.assert_close(checkpointed[n], kept[n], atol=1e-6, rtol=1e-5, msg=n)


def saved_bytes(model, b, max_windows: int) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward."""
    model.backbone.max_windows = max_windows
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(b.ids, b.lengths)
    return sum(seen.values())


def test_checkpointed_calls_keep_fewer_activations(tiny_folder):
    model, text = classifier(tiny_folder)
    b = long_batch(text)
    model.train()
    assert saved_bytes(model, b, 2) < saved_bytes(model, b, 10**6) / 3
    for p in model.backbone.bert.parameters():  # a frozen encoder keeps nothing, chunked or not
        p.requires_grad_(False)
    assert saved_bytes(model, b, 2) == saved_bytes(model, b, 10**6)


def test_inference_batches_respect_the_word_piece_budget():
    from ulmfit.text.token_docs import TokenDocs

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, 200)
    docs = TokenDocs.from_arrays([list(range(n)) for n in lengths])
    loader = ClassificationLoader(docs, None, bs=64, shuffle=False, max_batch_pieces=1000)
    batches = loader.batches()
    assert len(loader) == len(batches) and sorted(np.concatenate(batches).tolist()) == list(range(200))
    for idx in batches:
        assert len(idx) <= 64 and (len(idx) * lengths[idx].max() <= 1000 or len(idx) == 1)
    plain = ClassificationLoader(docs, None, bs=64, shuffle=False)
    assert np.array_equal(np.concatenate(batches), np.concatenate(plain.batches()))  # the same order
    assert len(ClassificationLoader(docs, None, bs=64, shuffle=False, max_batch_pieces=10**9)) == len(plain)
    with pytest.raises(ValueError, match="max_batch_pieces"):
        ClassificationLoader(docs, None, bs=64, shuffle=True, max_batch_pieces=1000)


def test_prediction_by_word_pieces_gives_the_same_probabilities(tiny_folder, monkeypatch):
    from ulmfit.recipes.transformer import TransformerMember

    model, text = classifier(tiny_folder)
    member = TransformerMember("fwd", text, None, model.eval())
    tokens = text.tokenize_many(LONG + ["great", "the crew was nice"])
    big = member.predict_proba(tokens, 2)
    monkeypatch.setattr("ulmfit.recipes.transformer.PREDICT_BATCH_PIECES", 30)  # one long document per batch
    model.backbone.max_windows = 2
    np.testing.assert_allclose(member.predict_proba(tokens, 2), big, atol=1e-6)
