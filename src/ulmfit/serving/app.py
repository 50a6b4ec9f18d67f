"""`ulmfit serve`: a model folder behind HTTP (FastAPI + uvicorn).

    POST /predict   {"texts": ["...", ...]} -> {"classes": [...], "predictions": [{"label", "probabilities"}]}
    GET  /health    the process answers (liveness)
    GET  /ready     the model is loaded and the batcher runs (readiness; 503 before)
    GET  /metadata  classes, recipe, backbone, directions, runtime, precision, limits, versions
    GET  /metrics   Prometheus text format (serving/metrics.py)
    GET  /openapi.json, /docs   the schema

Each worker process builds its own app (`app_from_env`, the uvicorn factory): it sets its thread
counts, loads the model once in the background (so /health answers during a long load) and runs one
`Batcher`. Errors are JSON, {"error": {"type", "message"}}: 413 over a limit (texts per request,
characters per text, body bytes), 422 malformed (not JSON, no "texts", a non-string), 503 not ready or
queue full, 500 for a failure inside the model (logged; the server keeps serving).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ulmfit.serving.batcher import Batcher, QueueFull
from ulmfit.serving.metrics import Metrics

log = logging.getLogger("ulmfit.serve")
ENV = "ULMFIT_SERVE_CONFIG"  # how `ulmfit serve` hands the config to each uvicorn worker process


@dataclass
class ServeConfig:
    """model: the model folder. runtime: torch or onnx (onnxruntime; the folder's model is exported
    to ONNX in memory at load). threads: intra-op threads per worker; 0 = cores // workers, so N
    workers share the cores instead of each starting one thread per core (2 workers x 2 threads on
    2 cores run ~2x slower per call). max_texts / max_chars: limits per request and per text (413
    above them); max_body: bytes per request body. max_batch: texts per model call; max_wait_ms: how
    long the batcher waits for more requests while a batch is not full; max_queue: requests waiting
    before the server answers 503 (bounded latency under overload). bs: the predictor's batch size."""

    model: str
    runtime: str = "torch"
    workers: int = 1
    threads: int = 0
    max_texts: int = 256
    max_chars: int = 10_000
    max_body: int = 4_000_000
    max_batch: int = 128
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    bs: int = 128
    precision: str = "auto"  # the predictor's: auto (bf16 on a CPU with native bf16, torch runtime), fp32, bf16

    def resolved_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, self.workers))


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["great flight, thanks!"]}]})
    texts: list[str] = Field(min_length=1, description="the texts to classify, one prediction each")


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    classes: list[str]
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


class _State:
    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.model = None
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.metrics = Metrics()
        self.load_seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None and self.batcher is not None and self.batcher.running


def set_threads(n: int) -> None:
    """This worker's share of the cores; and a small oneDNN primitive cache: dynamic batches come in
    many (batch, length) shapes and the default cache (1,024 primitives) grew the RSS of a worker by
    ~300 MB over a few thousand requests, where 64 keeps it flat at the same CPU time (measured)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")  # read at the first LSTM call
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (only possible once)


def load_model(cfg: ServeConfig):
    from ulmfit.recipes.predictor import load

    return load(cfg.model, cfg.runtime, threads=cfg.resolved_threads() if cfg.runtime == "onnx" else None,
                precision=cfg.precision)


def create_app(cfg: ServeConfig) -> FastAPI:
    st = _State(cfg)

    async def _load() -> None:
        t0 = time.perf_counter()
        try:
            model = await asyncio.to_thread(load_model, cfg)
        except Exception as e:  # noqa: BLE001 - reported by /ready and /predict, the process stays up
            st.load_error = f"{type(e).__name__}: {e}"
            log.error("model %s failed to load: %s", cfg.model, st.load_error)
            return
        st.batcher = Batcher(lambda texts: model.predict_proba(texts, bs=cfg.bs), cfg.max_batch, cfg.max_wait_ms,
                             cfg.max_queue, on_batch=st.metrics.model_call)
        st.batcher.start()
        st.model, st.load_seconds = model, time.perf_counter() - t0
        log.info("worker %d ready: %s (%s, %d threads) in %.1f s", os.getpid(), cfg.model, cfg.runtime,
                 cfg.resolved_threads(), st.load_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        set_threads(cfg.resolved_threads())
        loader = asyncio.create_task(_load())
        yield
        loader.cancel()
        if st.batcher is not None:
            await st.batcher.stop()

    app = FastAPI(title="ulmfit classifier", version=_version(), lifespan=lifespan,
                  description=f"Predictions of the ulmfit model folder {Path(cfg.model).name}.")
    app.state.serve = st

    app.add_middleware(Guard, st=st)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            loc = [x for x in e.get("loc", ()) if x != "body"]
            if e.get("type") == "json_invalid":
                where = f" at character {loc[0]}" if loc else ""
                parts.append(f"body is not valid JSON ({(e.get('ctx') or {}).get('error', 'decode error')}{where})")
            else:
                parts.append(f"{'.'.join(map(str, loc)) or 'body'}: {e.get('msg')}")
        return _error(422, "invalid_request", '; '.join(parts) + ' (expected a JSON object {"texts": ["...", ...]})')

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "http", str(exc.detail))

    @app.post("/predict", response_model=PredictResponse,
              responses={413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
    async def predict(req: PredictRequest):
        if len(req.texts) > cfg.max_texts:
            return _error(413, "too_many_texts", f"{len(req.texts)} texts in one request; the limit is "
                                                 f"{cfg.max_texts} (--max-texts): split the request")
        for i, t in enumerate(req.texts):
            if len(t) > cfg.max_chars:
                return _error(413, "text_too_long", f"texts[{i}] has {len(t)} characters; the limit is "
                                                    f"{cfg.max_chars} (--max-chars): shorten or split it")
        if not st.ready:
            return _error(503, "not_ready", _not_ready(st))
        try:
            probs = await st.batcher.submit(req.texts)
        except QueueFull:
            return _error(503, "busy", f"{cfg.max_queue} requests already waiting (--max-queue); retry shortly")
        classes = st.model.classes
        # a JSONResponse directly: the schema stays PredictResponse, without validating our own output again
        return JSONResponse({"classes": classes, "predictions": [
            {"label": classes[k], "probabilities": dict(zip(classes, row))}
            for k, row in zip(st.model.label_ids(probs).tolist(), probs.tolist())]})  # calibration.json's rule

    @app.get("/health")
    async def health():
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready():
        if not st.ready:
            return _error(503, "not_ready", _not_ready(st))
        return {"ready": True, "pid": os.getpid(), "load_seconds": round(st.load_seconds or 0, 3)}

    @app.get("/metadata", responses={503: {"model": ErrorResponse}})
    async def metadata():
        if not st.ready:
            return _error(503, "not_ready", _not_ready(st))
        m = st.model
        return {"model": str(Path(cfg.model).resolve().name), "classes": m.classes,
                "recipe": m.meta.get("recipe") or m.meta.get("kind"), "backbone": backbones(m),
                "directions": m.directions, "runtime": cfg.runtime, "precision": m.precision,
                "threads": cfg.resolved_threads(), "limits": {k: v for k, v in asdict(cfg).items()
                                                             if k.startswith("max_")}, "versions": versions(cfg.runtime)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(st.metrics.render(st.batcher.depth() if st.batcher else 0, st.ready),
                                 media_type="text/plain; version=0.0.4")

    return app


KNOWN_PATHS = {"/predict", "/health", "/ready", "/metadata", "/metrics", "/openapi.json", "/docs"}


class Guard:
    """Pure ASGI middleware (cheaper per request than Starlette's BaseHTTPMiddleware): refuses bodies
    over the limit from their Content-Length, turns an exception that escaped the app into a JSON 500
    (the server keeps serving), and counts every request in the metrics."""

    def __init__(self, app, st: _State):
        self.app, self.st = app, st

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, cfg = time.perf_counter(), self.st.cfg
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status, started = 500, False

        async def send_status(msg):
            nonlocal status, started
            if msg["type"] == "http.response.start":
                status, started = msg["status"], True
            await send(msg)

        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if length is not None and not length.isdigit():
                await _error(400, "bad_content_length", f"Content-Length {length.decode(errors='replace')!r} is "
                                                        f"not a byte count")(scope, receive, send_status)
            elif length is not None and int(length) > cfg.max_body:
                await _error(413, "body_too_large", f"request body of {int(length)} bytes; the limit is {cfg.max_body} "
                                                    f"bytes (--max-body); send fewer or shorter texts per request"
                             )(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        except Exception as e:  # noqa: BLE001 - the server never dies on a request
            log.exception("unhandled error on %s", scope["path"])
            if started:
                raise
            await _error(500, "internal", f"{type(e).__name__}: {e}")(scope, receive, send_status)
        finally:
            self.st.metrics.request(path, status, time.perf_counter() - t0 if path == "/predict" else None)


def backbones(model) -> str:
    """The backbone kind(s) of a loaded Classifier's members: a model's `backbone.kind` (transformer),
    else the AWD-LSTM (the ulmfit and SiATL recipes; every ONNX member)."""
    kinds = []
    for mem in model.members:
        kind = getattr(getattr(mem.model, "backbone", None), "kind", None) or "awd_lstm"
        if kind not in kinds:
            kinds.append(kind)
    return "+".join(kinds)


def _not_ready(st: _State) -> str:
    if st.load_error:
        return f"the model failed to load: {st.load_error}"
    return "the model is still loading; retry when GET /ready answers 200"


def _version() -> str:
    from ulmfit import __version__

    return __version__


def versions(runtime: str) -> dict:
    import fastapi
    import torch

    out = {"ulmfit": _version(), "python": platform.python_version(), "torch": torch.__version__,
           "fastapi": fastapi.__version__}
    if runtime == "onnx":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


def app_from_env() -> FastAPI:
    """The uvicorn factory each worker calls: the ServeConfig comes from $ULMFIT_SERVE_CONFIG (JSON)."""
    raw = os.environ.get(ENV)
    if not raw:
        sys.exit(f"error: ${ENV} is not set; start the server with `ulmfit serve DIR`")
    return create_app(ServeConfig(**json.loads(raw)))


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run uvicorn with `cfg.workers` worker processes, each loading the model once."""
    import uvicorn

    threads = str(cfg.resolved_threads())
    os.environ[ENV] = json.dumps(asdict(cfg))
    # Before any worker starts: OpenMP / MKL pools sized for this worker's share of the cores.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
    uvicorn.run("ulmfit.serving.app:app_from_env", factory=True, host=host, port=port, workers=cfg.workers,
                log_level=log_level, access_log=False, timeout_graceful_shutdown=10)
