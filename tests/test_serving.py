"""`ulmfit serve`: answers equal `ulmfit.load(DIR).predict_proba` (max abs difference 1e-6) for single
and batched requests, in process (TestClient) and through a real uvicorn on 127.0.0.1; 64 concurrent
clients each get their own answers; every malformed or over-limit request gets its 4xx JSON error
and the server keeps serving; metrics, metadata and readiness."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ulmfit.recipes.predictor import load
from ulmfit.serving.app import ServeConfig, create_app

from conftest import make_rows
from tiny_models import CLASSES, tiny_classifier_folder

TOL = 1e-6
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_classifier_folder(tmp_path_factory.mktemp("serve") / "model", both=True)


@pytest.fixture(scope="module")
def texts():
    return make_rows(40, 7).text.tolist() + ["", "ok", " ".join(["word"] * 40)]


@pytest.fixture(scope="module")
def expected(folder, texts):
    return load(folder).predict_proba(texts)


def wait_ready(client, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready: {client.get('/ready').json()}")


@pytest.fixture(scope="module")
def client(folder):
    cfg = ServeConfig(model=str(folder), threads=1, max_texts=50, max_chars=500, max_body=100_000)
    with TestClient(create_app(cfg)) as c:
        wait_ready(c)
        yield c


def probs_of(body):
    return np.array([[p["probabilities"][c] for c in body["classes"]] for p in body["predictions"]])


def test_single_and_batched_requests_equal_predict_proba(client, texts, expected):
    for i in (0, 41, 42):  # a sentence, "ok", a 40-word text (several chunks)
        r = client.post("/predict", json={"texts": [texts[i]]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["classes"] == CLASSES
        assert np.abs(probs_of(body)[0] - expected[i]).max() <= TOL
        assert body["predictions"][0]["label"] == CLASSES[int(expected[i].argmax())]
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 200
    assert np.abs(probs_of(r.json()) - expected).max() <= TOL


@pytest.mark.parametrize("request_kwargs,status,needle", [
    (dict(content=b"{not json"), 422, "JSON"),
    (dict(content=b"[1, 2]"), 422, "texts"),
    (dict(json={}), 422, "texts"),
    (dict(json={"texts": []}), 422, "texts"),
    (dict(json={"texts": "one string"}), 422, "texts"),
    (dict(json={"texts": ["fine", 3]}), 422, "texts.1"),
    (dict(json={"texts": ["fine", None]}), 422, "texts.1"),
    (dict(json={"texts": ["a"], "extra": 1}), 422, "extra"),
    (dict(json={"texts": ["a"] * 51}), 413, "51 texts"),
    (dict(json={"texts": ["a", "b" * 501]}), 413, "texts[1]"),
    (dict(content=b'{"texts": ["' + b"x" * 200_000 + b'"]}', headers={"content-type": "application/json"}), 413, "bytes"),
    (dict(content=b"texts=a", headers={"content-type": "application/x-www-form-urlencoded"}), 422, "texts"),
    (dict(content=b"\xff\xfe", headers={"content-type": "application/json"}), 422, "JSON"),
    (dict(content=b"null", headers={"content-type": "application/json"}), 422, "body"),
    (dict(json={"texts": [["nested"]]}), 422, "texts.0"),
    (dict(json={"texts": {"a": 1}}), 422, "texts"),
    (dict(content=b'{"texts":["a"]}', headers={"content-type": "application/json", "content-length": "x1"}), 400,
     "Content-Length"),
])
def test_malformed_requests_get_4xx_json_and_the_server_keeps_serving(client, texts, expected, request_kwargs,
                                                                      status, needle):
    r = client.post("/predict", **request_kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"], err
    ok = client.post("/predict", json={"texts": [texts[0]]})
    assert ok.status_code == 200 and np.abs(probs_of(ok.json())[0] - expected[0]).max() <= TOL


def test_odd_but_valid_texts_are_answered(client):
    odd = ["\ud800 lone surrogate", "\u0000\u0001 control", "😀 emoji ÿ", "   ", "\n\t"]
    body = json.dumps({"texts": odd}).encode()  # ASCII JSON with \u escapes: a lone surrogate is valid JSON text
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == len(odd)


def test_wrong_method_and_path_are_json_4xx(client):
    assert client.get("/predict").status_code == 405
    r = client.get("/nope")
    assert r.status_code == 404 and "error" in r.json()


def test_health_ready_metadata_metrics_openapi(client, folder):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json()["ready"] is True
    meta = client.get("/metadata").json()
    assert meta["classes"] == CLASSES and meta["recipe"] == "ulmfit" and meta["directions"] == ["fwd", "bwd"]
    assert meta["backbone"] == "awd_lstm" and meta["versions"]["torch"] and meta["limits"]["max_texts"] == 50
    client.post("/predict", json={"texts": ["x"]})
    client.post("/predict", json={"texts": []})
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'ulmfit_requests_total{pid="%d",path="/predict",status="200"}' % os.getpid() in text
    assert 'path="/predict",status="422"' in text
    assert "ulmfit_predict_latency_seconds_bucket" in text and "ulmfit_batch_size_count" in text
    errors = [l for l in text.splitlines() if l.startswith("ulmfit_request_errors_total")][0]
    assert int(errors.split()[-1]) >= 1
    spec = client.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and "PredictRequest" in json.dumps(spec)


def test_model_failure_is_a_500_and_the_server_recovers(folder, texts, expected):
    cfg = ServeConfig(model=str(folder), threads=1)
    app = create_app(cfg)
    with TestClient(app) as c:
        wait_ready(c)
        st = app.state.serve
        real = st.batcher.predict
        st.batcher.predict = lambda t: (_ for _ in ()).throw(RuntimeError("boom"))
        r = c.post("/predict", json={"texts": ["a"]})
        assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
        st.batcher.predict = real
        r = c.post("/predict", json={"texts": [texts[0]]})
        assert r.status_code == 200 and np.abs(probs_of(r.json())[0] - expected[0]).max() <= TOL


def test_a_folder_that_fails_to_load_answers_503_not_a_crash(tmp_path):
    with TestClient(create_app(ServeConfig(model=str(tmp_path / "missing"), threads=1))) as c:
        for _ in range(100):
            if "failed" in c.get("/ready").json()["error"]["message"]:
                break
            time.sleep(0.02)
        r = c.post("/predict", json={"texts": ["a"]})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]
        assert c.get("/health").status_code == 200


def test_batcher_groups_concurrent_requests_and_keeps_rows_apart():
    from ulmfit.serving.batcher import Batcher, QueueFull

    calls = []

    def predict(batch):
        calls.append(len(batch))
        time.sleep(0.01)
        return np.array([[float(t)] for t in batch])

    async def run():
        b = Batcher(predict, max_batch=16, max_wait_ms=20, max_queue=100)
        b.start()
        outs = await asyncio.gather(*[b.submit([str(i), str(i + 1000)]) for i in range(40)])
        await b.stop()
        return outs

    outs = asyncio.run(run())
    assert [o[:, 0].tolist() for o in outs] == [[i, i + 1000] for i in range(40)]
    assert max(calls) <= 16 and len(calls) < 40 and sum(calls) == 80

    async def overflow():
        b = Batcher(predict, max_batch=1, max_wait_ms=0, max_queue=2)
        b.start()
        tasks = [asyncio.ensure_future(b.submit(["1"])) for _ in range(10)]
        res = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        return res

    res = asyncio.run(overflow())
    assert any(isinstance(r, QueueFull) for r in res) and any(isinstance(r, np.ndarray) for r in res)


# ----------------------------------------------------------------------------- a real uvicorn

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(folder):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "ulmfit.cli", "serve", str(folder), "--host", "127.0.0.1",
                             "--port", str(port), "--threads", "1", "--max-wait-ms", "5", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    import httpx

    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - t0 > 90:
                raise AssertionError("server not ready after 90 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_real_server_64_concurrent_clients_get_their_own_answers(server, texts, expected):
    import httpx

    async def run():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as c:
            async def one(k):
                idx = [(k + j * 7) % len(texts) for j in range(1 + k % 3)]  # 1-3 texts, different per client
                r = await c.post("/predict", json={"texts": [texts[i] for i in idx]})
                return idx, r.status_code, r.json()
            return await asyncio.gather(*[one(k) for k in range(64)])

    results = asyncio.run(asyncio.wait_for(run(), 120))
    for idx, status, body in results:
        assert status == 200, body
        assert np.abs(probs_of(body) - expected[idx]).max() <= TOL
    import httpx as h
    m = h.get(server + "/metrics").text
    batch_count = int([l for l in m.splitlines() if l.startswith("ulmfit_batch_size_count")][0].split()[-1])
    assert batch_count < 64  # requests that arrived together shared model calls
    bad = h.post(server + "/predict", content=b"{oops", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert h.get(server + "/health").status_code == 200


def test_serve_runtime_onnx_answers_as_the_onnx_predictor_and_near_torch(folder, texts, expected):
    want = load(folder, runtime="onnx").predict_proba(texts)
    with TestClient(create_app(ServeConfig(model=str(folder), runtime="onnx", threads=1))) as c:
        wait_ready(c)
        r = c.post("/predict", json={"texts": texts})
        assert r.status_code == 200
        got = probs_of(r.json())
        assert np.abs(got - want).max() <= TOL
        assert np.abs(got - load(folder, precision="fp32").predict_proba(texts)).max() <= 1e-4  # fp32 vs fp32
        meta = c.get("/metadata").json()
        assert "onnxruntime" in meta["versions"] and meta["precision"] == "fp32"
