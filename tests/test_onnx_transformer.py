"""ONNX export of the transformer classifier (models/onnx.py `export_transformer`): one window pass per
graph, the windows cut by the same `cut_windows` as PyTorch; parity against PyTorch (max abs
difference 1e-4) for batch sizes 1 and 8, short texts and texts of several overlapping windows, through
`ulmfit.load(DIR, runtime="onnx")`, `ulmfit export` + `predict --runtime onnx`, and `serve --runtime onnx`,
on the tiny random BERT of tests/tiny_bert.py."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_bert import WORDS, make_tiny_bert  # noqa: E402
from ulmfit.cli import main  # noqa: E402
from ulmfit.models.classifier import ClassifierConfig  # noqa: E402
from ulmfit.models.onnx import OnnxTransformerModel, export_transformer, read_onnx_meta  # noqa: E402
from ulmfit.models.transformer import TransformerClassifier, TransformerConfig, load_pretrained_backbone  # noqa: E402
from ulmfit.recipes import model_dir  # noqa: E402
from ulmfit.recipes.predictor import load  # noqa: E402
from ulmfit.recipes.transformer import load_transformer_classifier, save_transformer_classifier  # noqa: E402

TOL = 1e-4
WINDOW, OVERLAP = 12, 3  # 10 content pieces per window, 7 new per step: 40 pieces = 5 windows


def _make_folder(root, pooling: str):
    bert = make_tiny_bert(root / "bert")
    backbone, text = load_pretrained_backbone(bert, TransformerConfig(window=WINDOW, overlap=OVERLAP, blocks_per_group=1))
    torch.manual_seed(0)
    model = TransformerClassifier(backbone, ClassifierConfig(n_classes=3), pooling=pooling).eval()
    with torch.no_grad():  # a head whose BatchNorm statistics are not the identity, so the logits spread
        for m in model.head.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    out = root / "model"
    out.mkdir()
    save_transformer_classifier(out, model, text, str(bert))
    model_dir.write_marker(out, "classifier", classes=["neg", "neu", "pos"], recipe="transformer", metric="macro_f1")
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _make_folder(tmp_path_factory.mktemp("onnx_tf"), "concat")


@pytest.fixture(scope="module")
def mean_folder(tmp_path_factory):
    return _make_folder(tmp_path_factory.mktemp("onnx_tf_mean"), "mean")


def _texts(n, seed, min_words=1, max_words=6):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(min_words, max_words + 1))) for _ in range(n)]


SHORT = _texts(8, 0)  # one window each
LONG = _texts(8, 1, 25, 60)  # several overlapping windows each (up to ~9)


@pytest.mark.parametrize("texts", [SHORT[:1], LONG[:1], SHORT, LONG, SHORT[:4] + LONG[:4], ["", "ok"]],
                         ids=["1-short", "1-long", "8-short", "8-long", "8-mixed", "empty"])
@pytest.mark.parametrize("pooling", ["concat", "mean"])
def test_window_pass_parity_against_torch(request, pooling, texts):
    model, text = load_transformer_classifier(request.getfixturevalue("folder" if pooling == "concat" else "mean_folder"))
    assert model.pooling == pooling
    data = export_transformer(model, {})
    onnx_model = OnnxTransformerModel(data)
    from ulmfit.data.cls_loader import ClassificationLoader

    docs = text.encode_many(text.tokenize_many(texts))
    batch = next(iter(ClassificationLoader(docs, None, bs=len(texts), shuffle=False, pad_idx=text.pad_id)))
    if texts is LONG:
        assert model.backbone.n_windows(batch.lengths.tolist()) > 3 * len(texts)  # really several windows each
    with torch.inference_mode():
        want = model(batch.ids, batch.lengths).numpy()
    got = onnx_model(batch.ids.numpy(), batch.lengths.numpy())
    assert got.shape == want.shape == (len(texts), 3)
    assert np.abs(got - want).max() < TOL
    if len(texts) > 1:
        assert np.abs(want - want.mean(0)).max() > 1e-3  # the rows differ: the check is not on a constant


def test_predictor_and_cli_export_parity(folder, tmp_path, capsys):
    texts = SHORT + LONG + [""]
    want = load(folder).predict_proba(texts)
    onnx_clf = load(folder, runtime="onnx")
    assert onnx_clf.precision == "fp32"
    for bs in (1, 8):  # batch sizes 1 and 8 through the whole pipeline
        assert np.abs(onnx_clf.predict_proba(texts, bs=bs) - want).max() < TOL
    for m in onnx_clf.members:  # batches bounded by word pieces (a long text alone): the same probabilities
        m.onnx_model.max_batch_pieces = 40
    assert np.abs(onnx_clf.predict_proba(texts) - want).max() < TOL
    out = tmp_path / "m.onnx"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    meta = read_onnx_meta(out)
    assert meta["kind"] == "transformer" and meta["window"] == WINDOW and meta["overlap"] == OVERLAP
    assert meta["classes"] == ["neg", "neu", "pos"]
    from_file = load(folder, "onnx", onnx_files={"fwd": out})
    assert np.abs(from_file.predict_proba(texts) - want).max() < TOL
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    capsys.readouterr()
    for runtime in ("torch", "onnx"):
        assert main(["predict", str(folder), "--data", str(data), "--out", str(tmp_path / f"{runtime}.csv"),
                     "--runtime", runtime]) == 0
    a, b = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert np.abs(a.filter(like="p_").values - b.filter(like="p_").values).max() <= TOL
    # a transformer has no bf16 path: asked explicitly, one line
    assert main(["predict", str(folder), "--data", str(data), "--precision", "bf16"]) == 2
    assert "only available for AWD-LSTM" in capsys.readouterr().err


def test_serve_runtime_onnx_transformer(folder):
    from fastapi.testclient import TestClient

    from ulmfit.serving.app import ServeConfig, create_app

    texts = SHORT[:3] + LONG[:2]
    want = load(folder).predict_proba(texts)
    with TestClient(create_app(ServeConfig(model=str(folder), runtime="onnx", threads=1))) as c:
        for _ in range(200):
            if c.get("/ready").status_code == 200:
                break
            import time

            time.sleep(0.05)
        r = c.post("/predict", json={"texts": texts})
        assert r.status_code == 200
        got = np.array([[p["probabilities"][k] for k in ("neg", "neu", "pos")] for p in r.json()["predictions"]])
        assert np.abs(got - want).max() < TOL
        assert c.get("/metadata").json()["runtime"] == "onnx"
