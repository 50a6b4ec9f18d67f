"""`ulmfit predict --workers N`: bulk prediction over a file of any size, split across N processes.

The input is streamed in chunks of `chunk_rows` texts (`data/readers.py: iter_text_chunks`); each
chunk goes to one of N worker processes (one torch thread each; each loads the model once, on its
first chunk); results are written in input order as soon as the chunk and all before it are done.
At most 2 * N chunks are in flight, so memory is flat in the file's size: a few chunks of text and
probabilities, plus one model per worker. With N = 1 the chunks are predicted in this process (with
torch's usual threads), through the same chunking, so N = 1 and N = 2 write the same bytes.

Output: CSV with columns text, label, p_<class>... (probabilities rounded to 6 decimals), to `out`
(atomically: the file appears complete or not at all) or to stdout. `runtime="onnx"`: each process
runs the model in onnxruntime (recipes/predictor.py `load(folder, runtime=)`).
"""
from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ulmfit.data.readers import iter_text_chunks
from ulmfit.errors import UlmfitError

_WORKER: dict = {}  # a worker process's loaded model, by folder


def load_model(folder: str, threads: int | None, runtime: str = "torch", precision: str = "auto"):
    """The classifier of `folder`, loaded once per process (and its torch threads set once): the bulk
    workers' and the Ray / Spark callables' (ray_predict.py) model."""
    if (folder, runtime, precision) not in _WORKER:
        import torch

        from ulmfit.recipes.predictor import load

        if threads:
            torch.set_num_threads(threads)
        _WORKER.clear()
        _WORKER[folder, runtime, precision] = load(folder, runtime=runtime, precision=precision)
    return _WORKER[folder, runtime, precision]


def _predict_chunk(folder: str, texts: list[str], threads: int | None, runtime: str = "torch",
                   precision: str = "auto") -> np.ndarray:
    return load_model(folder, threads, runtime, precision).predict_proba(texts)


def prediction_columns(probs: np.ndarray, classes: list[str], label_ids: np.ndarray) -> dict[str, np.ndarray]:
    """`label` (`label_ids`: the folder's decision rule, `Classifier.label_ids`) and one `p_<class>` column
    (float32) per class: what every bulk face returns."""
    cols = {"label": np.asarray([classes[i] for i in label_ids], dtype=object)}
    for j, c in enumerate(classes):
        cols[f"p_{c}"] = probs[:, j]
    return cols


def _frame(texts: list[str], probs: np.ndarray, classes: list[str], bias=None) -> pd.DataFrame:
    """The rows `ulmfit predict` writes: text, label (by the folder's decision rule, `bias` of its
    calibration.json), one rounded probability column per class."""
    from ulmfit.train.calibration import decide

    cols = prediction_columns(probs, classes, decide(probs, bias))
    return pd.DataFrame({"text": texts, **{k: v if k == "label" else v.round(6) for k, v in cols.items()}})


def iter_predictions(model: str | Path, chunks, workers: int = 1, runtime: str = "torch", precision: str = "auto"):
    """(texts, probabilities) per chunk of `chunks`, in input order, computed by `workers` processes."""
    folder = str(model)
    if workers < 1:
        raise UlmfitError(f"--workers must be at least 1, not {workers}")
    if workers == 1:
        for texts in chunks:
            yield texts, _predict_chunk(folder, texts, None, runtime, precision)
        return
    # spawn: a fresh interpreter per worker (forking a process that holds torch's thread pools can hang).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        pending: deque = deque()
        for texts in chunks:
            pending.append((texts, ex.submit(_predict_chunk, folder, texts, 1, runtime, precision)))
            if len(pending) >= 2 * workers:
                done_texts, fut = pending.popleft()
                yield done_texts, fut.result()
        while pending:
            done_texts, fut = pending.popleft()
            yield done_texts, fut.result()


def predict_file(model: str | Path, data: str | Path | None, out: str | Path | None = None, *, workers: int = 1,
                 text_col: str = "text", encoding: str = "utf-8", chunk_rows: int = 1000,
                 progress: bool | None = None, runtime: str = "torch", precision: str = "auto") -> int:
    """Predict every text of `data` (None: stdin) into the CSV `out` (None: stdout); returns the row count."""
    from ulmfit.fileio import atomic_file

    if workers < 1:
        raise UlmfitError(f"--workers must be at least 1, not {workers}")
    first = load_model(str(model), None, runtime, precision)  # the folder checked here, before any worker starts
    classes, bias = list(first.classes), (first.calibration or {}).get("bias")
    del first
    if workers > 1:
        _WORKER.clear()  # the workers load their own copies
    show = sys.stderr.isatty() if progress is None else progress
    chunks = iter_text_chunks(data, text_col=text_col, encoding=encoding, rows=chunk_rows)
    n = 0
    with (atomic_file(out, "w") if out else _stdout()) as f, \
            tqdm(unit=" texts", desc="predict", disable=not show, dynamic_ncols=True) as bar:
        for texts, probs in iter_predictions(model, chunks, workers, runtime, precision):
            _frame(texts, probs, classes, bias).to_csv(f, index=False, header=n == 0)
            n += len(texts)
            bar.update(len(texts))
        if n == 0:
            raise UlmfitError(f"{data or 'stdin'}: no texts to predict; give one document per row")
    return n


class _stdout:
    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc):
        sys.stdout.flush()
