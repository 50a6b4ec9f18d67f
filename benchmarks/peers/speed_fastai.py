"""Speed tasks for fastai 2.8, in benchmarks/.venvs/fastai (run by benchmarks/speed.py, one task per process):

    benchmarks/.venvs/fastai/bin/python benchmarks/peers/speed_fastai.py JOB.json RESULT.json

tasks: tokenize (fastai's `tokenize_texts`: its rules + spaCy; workers=1 runs in this process,
n_workers=0), lm (LMDataLoader over the same id stream as ours, TextLearner with AR/TAR,
fit_one_cycle; only the training phase timed), clf (one epoch of get_text_classifier on the same
token ids, SortedDL + pad_input_chunk as TextDataLoaders does), predict (text_classifier_learner
built by TextDataLoaders.from_df: `learn.predict(text)` per text, `get_preds(test_dl(texts))` in bulk).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import speed_task_main, read_json  # noqa: E402


class TrainTimer:
    """A fastai callback timing the training phase only (not validation)."""

    def __new__(cls):
        from fastai.callback.core import Callback

        class _T(Callback):
            order = -100

            def before_fit(self):
                self.seconds, self.batches = 0.0, 0

            def before_train(self):
                self.t0 = time.perf_counter()

            def after_batch(self):
                if self.training:
                    self.batches += 1

            def after_train(self):
                self.seconds += time.perf_counter() - self.t0

        return _T()


def tokenize(job):
    from fastai.text.all import tokenize_texts

    texts = read_json(job["texts"])
    nw = 0 if job["workers"] == 1 else job["workers"]
    times, n, out = [], 0, None
    for _ in range(job["repeat"]):
        out = None  # the last repeat's tokens freed before the clock starts (in speed_ours.py too)
        t0 = time.perf_counter()
        out = tokenize_texts(texts, n_workers=nw)
        times.append(time.perf_counter() - t0)
        n = sum(map(len, out))
    s = statistics.median(times)
    return {"tokens": n, "texts": len(texts), "seconds": round(s, 3), "tokens_per_s": n / s,
            "note": "workers=1 means in-process (n_workers=0)"}


def _config(job, clas=False):
    from fastai.text.all import awd_lstm_clas_config, awd_lstm_lm_config

    c = (awd_lstm_clas_config if clas else awd_lstm_lm_config).copy()
    c.update(emb_sz=job["emb_sz"], n_hid=job["n_hid"], n_layers=job["n_layers"])
    return c


def lm(job):
    import numpy as np
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.text.all import (AWD_LSTM, CrossEntropyLossFlat, DataLoaders, LMDataLoader, TensorText, TextLearner,
                                 awd_lstm_lm_split, get_language_model)

    torch.manual_seed(0)
    stream = np.load(job["stream"])
    bs, bptt = job["bs"], job["bptt"]
    model = get_language_model(AWD_LSTM, job["vocab_size"], config=_config(job), drop_mult=job["drop_mult"])
    out = []
    for steps in (job["warmup_steps"], job["steps"]):
        train = LMDataLoader([TensorText(torch.from_numpy(stream[: bs * bptt * steps + 1]).long())], bs=bs,
                             seq_len=bptt, shuffle=False)
        valid = LMDataLoader([TensorText(torch.from_numpy(stream[: bs * bptt * 2 + 1]).long())], bs=bs, seq_len=bptt)
        timer = TrainTimer()
        learn = TextLearner(DataLoaders(train, valid), model, loss_func=CrossEntropyLossFlat(),
                            splitter=awd_lstm_lm_split, cbs=[timer], wd=0.1)
        learn.remove_cbs(ProgressCallback)
        with learn.no_logging():
            learn.fit_one_cycle(1, 1e-3)
        out.append((timer.seconds, timer.batches))
    s, b = out[-1]
    tokens = b * bs * bptt
    return {"tokens_per_s": tokens / s, "steps": b, "tokens": tokens, "seconds": s,
            "parameters": sum(p.numel() for p in model.parameters())}


def clf(job):
    from functools import partial

    import numpy as np
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.text.all import (AWD_LSTM, CrossEntropyLossFlat, DataLoaders, SortedDL, TensorCategory, TensorText,
                                 TextLearner, awd_lstm_clas_split, get_text_classifier, pad_input_chunk)

    torch.manual_seed(0)
    d = np.load(job["docs"])
    docs = np.split(d["ids"], d["offsets"][1:-1])
    labels = d["labels"]
    items = [(TensorText(torch.from_numpy(x).long()), TensorCategory(int(y))) for x, y in zip(docs, labels)]
    n_classes = int(labels.max()) + 1
    before = partial(pad_input_chunk, seq_len=job["bptt"])
    train = SortedDL(items, bs=job["bs"], shuffle=True, before_batch=before, res=[len(x) for x in docs])
    valid = SortedDL(items[:64], bs=job["bs"], before_batch=before, res=[len(x[0]) for x in items[:64]])
    model = get_text_classifier(AWD_LSTM, job["vocab_size"], n_classes, seq_len=job["bptt"], config=_config(job, True),
                                drop_mult=0.5, max_len=job["bptt"] * 20)
    timer = TrainTimer()
    learn = TextLearner(DataLoaders(train, valid), model, loss_func=CrossEntropyLossFlat(), splitter=awd_lstm_clas_split,
                        cbs=[timer])
    learn.remove_cbs(ProgressCallback)
    learn.unfreeze()
    with learn.no_logging():
        learn.fit_one_cycle(1, 1e-3)
    n_tokens = int(sum(len(x) for x in docs))
    return {"seconds_per_epoch": timer.seconds, "docs": len(docs), "tokens": n_tokens,
            "tokens_per_s": n_tokens / timer.seconds}


def predict(job):
    import numpy as np
    import pandas as pd
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.text.all import AWD_LSTM, TextDataLoaders, text_classifier_learner

    torch.manual_seed(0)
    fit_texts, texts = read_json(job["fit_texts"]), read_json(job["texts"])
    labels = ["negative", "neutral", "positive"]
    df = pd.DataFrame({"text": fit_texts, "label": [labels[i % 3] for i in range(len(fit_texts))]})
    dls = TextDataLoaders.from_df(df, text_col="text", label_col="label", valid_pct=0.1, seed=0, bs=64,
                                  num_workers=0, max_vocab=job["max_vocab"])
    learn = text_classifier_learner(dls, AWD_LSTM, config=_config(job, True), pretrained=False, drop_mult=0.5)
    learn.remove_cbs(ProgressCallback)
    for t in texts[:5]:
        learn.predict(t)
    lat = []
    for t in texts[: job["n_single"]]:
        t0 = time.perf_counter()
        learn.predict(t)
        lat.append(time.perf_counter() - t0)
    batch = texts[: job["n_batch"]]
    t0 = time.perf_counter()
    learn.get_preds(dl=learn.dls.test_dl(batch))
    s = time.perf_counter() - t0
    return {"latency_ms_median": 1000 * statistics.median(lat), "latency_ms_p95": 1000 * float(np.percentile(lat, 95)),
            "batch_texts_per_s": len(batch) / s, "n_single": len(lat), "n_batch": len(batch),
            "vocab_size": len(dls.vocab[0])}


if __name__ == "__main__":
    speed_task_main(globals())
