"""ONNX export: the exported classifier and language model give PyTorch's numbers (max abs difference
1e-4) for batch sizes 1 and 8 and lengths from 1 token to several BPTT chunks, through onnxruntime;
`ulmfit export` and `predict --runtime onnx`; the weight-dropped LSTM exports as a plain LSTM."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ulmfit.cli import main
from ulmfit.errors import UlmfitError
from ulmfit.recipes import model_dir
from ulmfit.recipes.predictor import load
from ulmfit.models.onnx import OnnxChunkModel, export_classifier, export_lm, read_onnx_meta, session

from conftest import make_rows
from tiny_models import tiny_classifier_folder

TOL = 1e-4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_classifier_folder(tmp_path_factory.mktemp("onnx") / "model", both=True)


def _batch(lengths, vocab_size, seed=0):
    """Right-padded ids sorted by length descending, as ClassificationLoader gives them."""
    g = torch.Generator().manual_seed(seed)
    lengths = sorted(lengths, reverse=True)
    ids = torch.full((len(lengths), lengths[0]), 1, dtype=torch.long)
    for r, L in enumerate(lengths):
        ids[r, :L] = torch.randint(2, vocab_size, (L,), generator=g)
    return ids, torch.tensor(lengths)


@pytest.mark.parametrize("lengths", [[1], [4], [5], [6], [23], [1] * 8, [5] * 8, [1, 2, 5, 6, 11, 12, 13, 31],
                                     [30, 29, 17, 9, 5, 4, 2, 1]])
def test_classifier_parity_by_length_and_batch(folder, lengths):
    # bptt 5, max_len 12: 1 token, exactly one chunk, one past it, up to 7 chunks with the pooling cut-off
    model = model_dir.load_classifier_model(folder)
    onnx_model = OnnxChunkModel(export_classifier(model, {}))
    ids, lens = _batch(lengths, model.encoder.cfg.vocab_size)
    with torch.inference_mode():
        want = model(ids, lens).numpy()
    got = onnx_model(ids.numpy(), lens.numpy())
    assert got.shape == want.shape
    assert np.abs(got - want).max() < TOL


def test_end_to_end_probabilities_match_torch_both_directions(folder):
    texts = make_rows(20, 5).text.tolist() + ["", "ok", " ".join(["word"] * 40)]
    want = load(folder, precision="fp32").predict_proba(texts)  # fp32 against fp32
    onnx_clf = load(folder, runtime="onnx")
    assert [m.direction for m in onnx_clf.members] == ["fwd", "bwd"]
    got = onnx_clf.predict_proba(texts)
    assert np.abs(got - want).max() < TOL
    for bs in (1, 8):  # batch sizes 1 and 8 through the whole pipeline
        assert np.abs(onnx_clf.predict_proba(texts, bs=bs) - want).max() < TOL


def test_graph_holds_plain_lstm_nodes_and_metadata(folder):
    import onnx

    data = export_classifier(model_dir.load_classifier_model(folder), {"direction": "fwd"})
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert ops.count("LSTM") == 2  # the tiny preset's two layers, as ONNX LSTM ops
    meta = read_onnx_meta(data)
    assert meta["bptt"] == 5 and meta["max_len"] == 12 and meta["direction"] == "fwd"


@pytest.mark.parametrize("B,T", [(1, 1), (8, 3), (2, 17)])
def test_lm_parity_with_state_carried(folder, B, T):
    lm, _, vocab = model_dir.load_lm(folder)
    sess = session(export_lm(lm, {}))
    g = torch.Generator().manual_seed(T)
    ids = torch.randint(2, len(vocab), (B, 2 * T), generator=g)
    with torch.inference_mode():
        want1, state, _, _ = lm(ids[:, :T])
        want2, _, _, _ = lm(ids[:, T:], state)
    L = len(lm.encoder.rnns)
    zeros = [np.zeros((1, B, r.hidden_size), np.float32) for r in lm.encoder.rnns] * 2
    names = [i.name for i in sess.get_inputs()]
    out1 = sess.run(None, dict(zip(names, [ids[:, :T].numpy(), *zeros])))
    out2 = sess.run(None, dict(zip(names, [ids[:, T:].numpy(), *out1[1:1 + 2 * L]])))
    assert np.abs(out1[0] - want1.numpy()).max() < TOL
    assert np.abs(out2[0] - want2.numpy()).max() < TOL  # the carried state is the same state


def test_cli_export_both_directions_and_predict_runtime_onnx(folder, tmp_path, capsys):
    out = tmp_path / "exp" / "model.onnx"
    assert main(["export", str(folder), "--format", "onnx", "--out", str(out)]) == 0
    assert out.exists() and (tmp_path / "exp" / "model.bwd.onnx").exists()
    assert read_onnx_meta(out)["classes"] == ["neg", "neu", "pos"]
    assert read_onnx_meta(tmp_path / "exp" / "model.bwd.onnx")["direction"] == "bwd"
    assert main(["export", str(folder), "--out", str(tmp_path / "lm.onnx"), "--part", "lm"]) == 0
    assert read_onnx_meta(tmp_path / "lm.onnx")["kind"] == "lm"
    # the written files load back and predict as the in-memory export does
    texts = make_rows(6, 3).text.tolist()
    from_files = load(folder, "onnx", onnx_files={"fwd": out, "bwd": tmp_path / "exp" / "model.bwd.onnx"})
    assert np.abs(from_files.predict_proba(texts) - load(folder, precision="fp32").predict_proba(texts)).max() < TOL

    data = tmp_path / "in.csv"
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    capsys.readouterr()
    for runtime in ("torch", "onnx"):
        assert main(["predict", str(folder), "--data", str(data), "--out", str(tmp_path / f"{runtime}.csv"),
                     "--runtime", runtime, "--precision", "fp32"]) == 0
    a, b = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert list(a.label) == list(b.label)
    assert np.abs(a.filter(like="p_").values - b.filter(like="p_").values).max() <= 2e-6  # CSV rounds to 6 places


def test_export_refuses_other_models_and_lm_folders_in_one_line(folder, tmp_path, capsys, monkeypatch):
    import json
    import shutil

    # a recipe whose model is not the AWD-LSTM classifier (SiATL, the transformer): refused in one line
    monkeypatch.setattr(model_dir, "load_classifier_model", lambda f: torch.nn.Linear(2, 3))
    assert main(["export", str(folder), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "ONNX export covers" in err and "Linear" in err and "\n" not in err
    with pytest.raises(UlmfitError, match="--runtime torch"):
        load(folder, runtime="onnx")
    monkeypatch.undo()
    marker = json.loads((folder / "ulmfit.json").read_text())
    lm_only = tmp_path / "lm"
    shutil.copytree(folder, lm_only, ignore=shutil.ignore_patterns("bwd"))
    (lm_only / "ulmfit.json").write_text(json.dumps({**marker, "kind": "lm"}))
    assert main(["export", str(lm_only), "--out", str(tmp_path / "y.onnx")]) == 2
    assert "--part lm" in capsys.readouterr().err


def test_weight_drop_lstm_eval_fast_path_equals_functional_call():
    from ulmfit.models.dropout import WeightDropLSTM

    torch.manual_seed(0)
    layer = WeightDropLSTM(6, 7, weight_p=0.5).eval()
    x, h, c = torch.randn(3, 4, 6), torch.randn(1, 3, 7), torch.randn(1, 3, 7)
    out, (h1, c1) = layer(x, (h, c))
    plain = layer.to_plain()
    out2, (h2, c2) = plain(x, (h, c))
    assert torch.allclose(out, out2, atol=1e-6) and torch.allclose(h1, h2, atol=1e-6) and torch.allclose(c1, c2, atol=1e-6)
    layer.train()
    torch.manual_seed(1)
    out3, _ = layer(x, (h, c))  # training still drops the recurrent weights
    assert not torch.allclose(out3, out, atol=1e-4)


def test_one_chunk_inference_path_equals_the_chunk_loop(folder):
    # bptt 100 takes the one-chunk path for these lengths, bptt 5 the loop: the same document reading
    model = model_dir.load_classifier_model(folder)
    ids, lens = _batch([30, 29, 17, 9, 5, 4, 2, 1], model.encoder.cfg.vocab_size, seed=3)
    perm = torch.tensor([3, 0, 7, 1, 6, 2, 5, 4])  # rows in any order
    with torch.inference_mode():
        loop = model(ids[perm], lens[perm])
        model.cfg.bptt = 100
        one = model(ids[perm], lens[perm])
    assert torch.allclose(loop, one, atol=1e-5)
