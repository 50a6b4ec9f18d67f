"""Prediction precision (recipes/predictor.py): "fp32" is the exact path (the model's own forward, bit for
bit); "bf16" runs the AWD-LSTM encoder with bf16 weights, pooling and head in fp32, within a stated
tolerance of fp32 for short and multi-chunk texts; "auto" is bf16 only on a CPU with native bf16; a
model or runtime without a bf16 path refuses an explicit "bf16" in one line and runs fp32 under "auto"."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ulmfit.cli import main
from ulmfit.errors import UlmfitError
from ulmfit.recipes import model_dir
from ulmfit.recipes.predictor import Member, load
from ulmfit.train import precision as precision_mod

from conftest import make_rows
from tiny_models import tiny_classifier_folder

# bf16 keeps 8 bits of mantissa: the tiny random models' probabilities move by ~1e-3 (measured on a
# trained tweets classifier: docs/SERVING.md "Precision"); 2e-2 leaves room while catching a wrong path
BF16_TOL = 2e-2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_classifier_folder(tmp_path_factory.mktemp("prec") / "model", both=True)


@pytest.fixture(scope="module")
def texts():
    # short texts, the empty text, and texts of several BPTT chunks (the chunk loop, state carried in bf16)
    return make_rows(30, 11).text.tolist() + ["", "ok", " ".join(["word"] * 40), " ".join(["great bad"] * 30)]


def _model_probs(member, texts):
    """The member's model run directly (its own forward, no predictor batching), rows in input order."""
    docs = member.vocab.encode_many(member.tokenizer.tokenize_many(texts))
    if member.direction == "bwd":
        docs = docs.reversed()
    out = []
    with torch.inference_mode():
        for i in range(len(docs)):
            ids = torch.as_tensor(np.asarray(docs[i], dtype=np.int64))[None]
            if ids.numel() == 0:
                ids = torch.ones(1, 1, dtype=torch.long)
            out.append(torch.softmax(member.model(ids, torch.tensor([ids.size(1)])).float(), -1)[0].numpy())
    return np.stack(out)


def test_fp32_is_the_exact_path(folder, texts):
    clf = load(folder, precision="fp32")
    assert clf.precision == "fp32"
    ref = model_dir.load_classifier_model(folder)
    assert all(p.dtype == torch.float32 for p in clf.members[0].model.parameters())
    for m in clf.members:
        assert m.precision == "fp32"
    by_dir = clf.predict_proba_by_direction(texts)
    for m in clf.members:  # batched prediction = each text alone through the model, to float rounding
        assert np.abs(by_dir[m.direction] - _model_probs(m, texts)).max() < 1e-5
    assert ref.encoder.embedding.weight.dtype == torch.float32


def test_bf16_within_tolerance_of_fp32_and_pooling_stays_fp32(folder, texts):
    f32, b16 = load(folder, precision="fp32"), load(folder, precision="bf16")
    assert b16.precision == "bf16" and [m.precision for m in b16.members] == ["bf16", "bf16"]
    model = b16.members[0].model
    assert model.encoder.embedding.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.head.parameters())
    ids = torch.randint(2, model.encoder.cfg.vocab_size, (3, 23))
    with torch.inference_mode():
        feats = model.features(ids, torch.tensor([23, 9, 1]))  # several chunks (bptt 5) and one
        assert feats.dtype == torch.float32
    p32, p16 = f32.predict_proba(texts), b16.predict_proba(texts)
    assert p16.dtype == np.float32 and np.allclose(p16.sum(1), 1, atol=1e-5)
    diff = np.abs(p32 - p16).max()
    assert 0 < diff < BF16_TOL  # bf16 really ran (not the fp32 path), and stays close
    # batching does not change the bf16 answers beyond bf16 rounding (one text at a time vs all together)
    one_by_one = np.concatenate([b16.predict_proba([t]) for t in texts[-6:]])
    assert np.abs(one_by_one - p16[-6:]).max() < BF16_TOL


def test_bf16_one_chunk_path_equals_chunk_loop(folder):
    # the one-chunk inference shortcut and the general chunk loop give the same bf16 numbers
    model = model_dir.load_classifier_model(folder).eval().set_encoder_dtype(torch.bfloat16)
    ids = torch.randint(2, model.encoder.cfg.vocab_size, (4, 5))
    lengths = torch.tensor([5, 4, 2, 1])
    with torch.inference_mode():
        one = model.features(ids, lengths)
        model.cfg.bptt = 3  # forces the chunk loop for the same inputs... with a different schedule
        loop = model.features(ids, lengths)
    assert one.dtype == loop.dtype == torch.float32
    assert (one - loop).abs().max() < BF16_TOL


def test_auto_follows_the_cpu(folder, texts, monkeypatch):
    precision_mod.native_bf16_cpu.cache_clear()
    monkeypatch.setattr(precision_mod, "native_bf16_cpu", lambda: None)
    no_bf16 = load(folder)  # the default is auto
    assert no_bf16.precision == "fp32"
    assert np.array_equal(no_bf16.predict_proba(texts), load(folder, precision="fp32").predict_proba(texts))
    monkeypatch.setattr(precision_mod, "native_bf16_cpu", lambda: "avx512_bf16")
    assert load(folder).precision == "bf16"


def test_explicit_bf16_refused_where_there_is_no_bf16_path(folder, tmp_path, capsys):
    with pytest.raises(UlmfitError, match="ONNX export computes in fp32"):
        load(folder, runtime="onnx", precision="bf16")
    assert load(folder, runtime="onnx", precision="auto").precision == "fp32"
    with pytest.raises(UlmfitError, match="precision must be one of"):
        load(folder, precision="fp16")
    # a model without set_encoder_dtype (e.g. SiATL's, the transformer's): explicit bf16 refused, auto is fp32
    from ulmfit.recipes import predictor

    with pytest.raises(UlmfitError, match="only available for AWD-LSTM"):
        predictor.inference_precision(torch.nn.Linear(2, 2), "bf16", "somewhere")
    assert predictor.inference_precision(torch.nn.Linear(2, 2), "fp32", "somewhere") == "fp32"
    data = tmp_path / "in.txt"
    data.write_text("good\nbad\n")
    assert main(["predict", str(folder), "--data", str(data), "--runtime", "onnx", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--precision fp32" in err and "\n" not in err


def test_member_load_precision_argument(folder):
    m = Member.load(folder, "fwd", "ulmfit", precision="bf16")
    assert m.precision == "bf16" and m.model.encoder.rnns[0].weight_hh_l0_raw.dtype == torch.bfloat16
    assert Member.load(folder, "fwd", "ulmfit", precision="fp32").precision == "fp32"
