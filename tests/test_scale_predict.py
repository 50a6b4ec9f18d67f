"""Bulk prediction: `ulmfit predict --workers N` (streamed, ordered, the same bytes for any N) and the
Ray Data / Spark callables (the same predictions as `ulmfit predict`)."""
from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import make_rows, tiny_fit_config
from ulmfit.data.readers import iter_text_chunks, read_table
from ulmfit.errors import UlmfitError
from ulmfit.scale import bulk


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from ulmfit.recipes.fit import fit

    tmp = tmp_path_factory.mktemp("model")
    make_rows(90, 0).to_csv(tmp / "train.csv", index=False)
    cfg = tiny_fit_config()
    cfg.lm = replace(cfg.lm, epochs=1)
    cfg.clf = replace(cfg.clf, epochs=(1, 1, 1, 1), lrs=(3e-2, 3e-2, 3e-2, 2e-2))
    fit(tmp / "train.csv", out=tmp / "m", config=cfg)
    return tmp / "m"


@pytest.fixture
def texts_csv(tmp_path):
    df = make_rows(61, 7)[["text"]]
    df.loc[5, "text"] = ""  # an empty text still gets its row
    df.loc[9, "text"] = 'a "quoted", multi\nline text'
    df.to_csv(tmp_path / "texts.csv", index=False)
    return tmp_path / "texts.csv", df["text"].tolist()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".txt"])
def test_streamed_chunks_are_the_file_in_order(tmp_path, suffix):
    texts = [t.replace("\n", " ") for t in make_rows(23, 3)["text"]] + ["", "last"]
    path = tmp_path / f"t{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(texts) + "\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    else:
        pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(path, sep="," if suffix == ".csv" else "\t",
                                                                      index=False)
    chunks = list(iter_text_chunks(path, rows=4))
    assert [len(c) for c in chunks] == [4] * 6 + [1]
    assert sum(chunks, []) == texts == read_table(path, on_empty="keep").texts


def test_streamed_reader_names_a_missing_column(tmp_path):
    pd.DataFrame({"tweet": ["a", "b"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UlmfitError, match="no column 'text'.*tweet"):
        list(iter_text_chunks(tmp_path / "t.csv"))


def test_predict_file_one_worker_matches_the_in_memory_model(model, texts_csv, tmp_path):
    from ulmfit.recipes.predictor import load

    path, texts = texts_csv
    assert bulk.predict_file(model, path, tmp_path / "p.csv", chunk_rows=7) == len(texts)
    out = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert out["text"].tolist() == texts
    clf = load(model)
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(out[[f"p_{c}" for c in clf.classes]].to_numpy(), probs, atol=2e-6)
    assert out["label"].tolist() == [clf.classes[i] for i in probs.argmax(1)]


@pytest.mark.slow
def test_two_workers_write_the_same_bytes_in_input_order_with_bounded_lookahead(model, texts_csv, tmp_path,
                                                                                monkeypatch):
    path, texts = texts_csv
    bulk.predict_file(model, path, tmp_path / "w1.csv", workers=1, chunk_rows=5)
    pulled = []

    def counting(*a, **k):  # how far reading runs ahead of writing
        for chunk in iter_text_chunks(*a, **k):
            pulled.append(len(chunk))
            yield chunk

    monkeypatch.setattr(bulk, "iter_text_chunks", counting)
    leads, yielded = [], [0]
    real = bulk.iter_predictions

    def watching(*a, **k):
        for texts_, probs in real(*a, **k):
            yielded[0] += 1
            leads.append(len(pulled) - yielded[0])
            yield texts_, probs

    monkeypatch.setattr(bulk, "iter_predictions", watching)
    bulk.predict_file(model, path, tmp_path / "w2.csv", workers=2, chunk_rows=5)
    assert (tmp_path / "w2.csv").read_bytes() == (tmp_path / "w1.csv").read_bytes()
    assert len(pulled) == 13 and max(leads) <= 2 * 2  # at most 2 * workers chunks in memory


def test_predict_cli_reads_stdin_and_refuses_bad_worker_counts(model, monkeypatch, capsys):
    from ulmfit.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("great flight\nawful delay\n"))
    assert main(["predict", str(model)]) == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert out["text"].tolist() == ["great flight", "awful delay"]
    assert main(["predict", str(model), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_data_map_batches_gives_the_predictions_of_ulmfit_predict(model, texts_csv, tmp_path):
    ray = pytest.importorskip("ray")
    from ulmfit.scale.ray_predict import RayPredictor

    path, texts = texts_csv
    bulk.predict_file(model, path, tmp_path / "p.csv", chunk_rows=16)
    expected = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = ray.data.from_pandas(pd.DataFrame({"text": texts}))
        got = ds.map_batches(RayPredictor, fn_constructor_kwargs={"model": str(model)}, concurrency=1,
                             batch_size=16, batch_format="pandas").to_pandas()
    finally:
        ray.shutdown()
    assert got["text"].tolist() == texts
    assert got["label"].tolist() == expected["label"].tolist()
    cols = [c for c in expected.columns if c.startswith("p_")]
    np.testing.assert_allclose(got[cols].to_numpy(dtype=float), expected[cols].to_numpy(dtype=float), atol=2e-6)


def test_spark_predict_fn_and_numpy_batches_match(model, texts_csv, tmp_path):
    from ulmfit.scale.ray_predict import RayPredictor, spark_predict_fn

    path, texts = texts_csv
    bulk.predict_file(model, path, tmp_path / "p.csv", chunk_rows=1000)
    expected = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    predict = spark_predict_fn(model)()  # what predict_batch_udf calls once per worker
    cols = predict(np.asarray(texts, dtype=object))
    assert list(cols["label"]) == expected["label"].tolist()
    for c in expected.columns:
        if c.startswith("p_"):
            np.testing.assert_allclose(cols[c], expected[c], atol=2e-6)
    batch = RayPredictor(model)({"text": np.asarray(texts[:5], dtype=object), "id": np.arange(5)})
    assert list(batch["id"]) == list(range(5)) and list(batch["label"]) == expected["label"].tolist()[:5]
    with pytest.raises(UlmfitError, match="no column 'text'"):
        RayPredictor(model)({"body": np.asarray(["x"])})
