"""Speed tasks for ulmfit, in our venv (run by benchmarks/speed.py, one task per process):

    .venv/bin/python benchmarks/peers/speed_ours.py JOB.json RESULT.json

tasks: tokenize (Tokenizer.tokenize_many, n workers), lm (LM training through our training loop
`run_phase`: forward + AR/TAR + backward + clip + AdamW step), clf (one classifier epoch, all layers
trainable, same loop), predict (a saved model folder via `ulmfit.load`: one text at a time, then
batches), predict_onnx (the same through onnxruntime), predict_fp32 (the exact fp32 path).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import speed_task_main, read_json  # noqa: E402


def tokenize(job):
    from ulmfit.text.tokenize import Tokenizer

    texts = read_json(job["texts"])
    times, n, out = [], 0, None
    for _ in range(job["repeat"]):
        # a new Tokenizer each time (as fastai's `tokenize_texts` builds a new tokenizer per call),
        # and the last repeat's tokens freed before the clock starts (in speed_fastai.py too)
        tok = Tokenizer()
        _clear_casing_cache()
        out = None
        t0 = time.perf_counter()
        out = tok.tokenize_many(texts, n_workers=job["workers"])
        times.append(time.perf_counter() - t0)
        n = sum(map(len, out))
    s = statistics.median(times)
    return {"tokens": n, "texts": len(texts), "seconds": round(s, 3), "tokens_per_s": n / s}


def _clear_casing_cache():
    try:
        from ulmfit.text.tokenize import _CASE
    except ImportError:  # no cache across calls (the current tokenizer; an older one with --baseline-src)
        return
    _CASE.clear()


def _size(job):
    from ulmfit.models.awd_lstm import AWDLSTMConfig

    return AWDLSTMConfig(vocab_size=job["vocab_size"], emb_size=job["emb_sz"], hidden_size=job["n_hid"],
                         n_layers=job["n_layers"], drop_mult=job["drop_mult"])


def lm(job):
    import numpy as np

    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.models.awd_lstm import LanguageModel
    from ulmfit.text.token_docs import TokenDocs
    from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
    from ulmfit.train.optim import make_optimizer, param_groups
    from ulmfit.train.tasks import LMTask

    import torch
    torch.manual_seed(0)
    stream = np.load(job["stream"])
    bs, bptt = job["bs"], job["bptt"]
    valid = TokenDocs.from_arrays([stream[: bs * bptt * 2 + 1]])
    model = LanguageModel(_size(job))
    groups = model.layer_groups()
    opt = make_optimizer(param_groups(groups, 1e-3, weight_decay=0.1))
    res = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, steps in enumerate((job["warmup_steps"], job["steps"])):  # the first run warms up
            train = TokenDocs.from_arrays([stream[: bs * bptt * steps + 1]])
            loader = LMLoader(train, bs=bs, bptt=bptt, shuffle=False)
            r = run_phase(model, LMTask(), opt, groups, [Stage("all", 1, 1e-3)], loader,
                          LMLoader(valid, bs=bs, bptt=bptt, shuffle=False), PhaseFiles(Path(tmp) / str(k), "lm"),
                          LoopConfig(patience=None, progress=False, precision=job.get("precision", "auto")))
            res.append(r.history[-1])
    h = res[-1]
    tokens = job["steps"] * bs * bptt
    try:
        from ulmfit.train.precision import resolve_precision
        precision = resolve_precision(job.get("precision", "auto"))
    except ImportError:  # an older ulmfit (--baseline-src) without auto: fp32 unless told
        precision = job.get("precision", "fp32")
    return {"tokens_per_s": h["train_tokens_per_s"], "steps": len(loader), "tokens": tokens, "precision": precision,
            "seconds": tokens / h["train_tokens_per_s"],
            "parameters": sum(p.numel() for p in model.parameters())}


def clf(job):
    import numpy as np
    import torch

    from ulmfit.data.cls_loader import ClassificationLoader
    from ulmfit.recipes.config import ClassifierTrainConfig
    from ulmfit.recipes.ulmfit import classifier_from_lm
    from ulmfit.models.awd_lstm import LanguageModel
    from ulmfit.text.token_docs import TokenDocs
    from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
    from ulmfit.train.optim import make_optimizer, param_groups
    from ulmfit.train.tasks import ClassifierTask

    torch.manual_seed(0)
    d = np.load(job["docs"])
    docs = TokenDocs.from_arrays(np.split(d["ids"], d["offsets"][1:-1]))
    labels = d["labels"]
    n_classes = int(labels.max()) + 1
    cfg = ClassifierTrainConfig(bs=job["bs"], bptt=job["bptt"], drop_mult=0.5)
    model, _, _ = classifier_from_lm(LanguageModel(_size(job)), _size(job), n_classes, cfg)
    groups = model.layer_groups()
    opt = make_optimizer(param_groups(groups, 1e-3))
    vidx = np.arange(min(64, len(docs)))
    loader = ClassificationLoader(docs, labels, bs=job["bs"], shuffle=True)
    valid = ClassificationLoader(docs.subset(vidx), labels[vidx], bs=job["bs"], shuffle=False)
    with tempfile.TemporaryDirectory() as tmp:
        r = run_phase(model, ClassifierTask([str(i) for i in range(n_classes)]), opt, groups,
                      [Stage("all", 1, 1e-3, freeze_to=0)], loader, valid, PhaseFiles(Path(tmp), "classifier"),
                      LoopConfig(patience=None, progress=False))
    h = r.history[-1]
    n_tokens = int(docs.lengths.sum())
    return {"seconds_per_epoch": n_tokens / h["train_tokens_per_s"], "docs": len(docs), "tokens": n_tokens,
            "tokens_per_s": h["train_tokens_per_s"]}


def predict(job):
    import numpy as np
    import torch

    import ulmfit
    from ulmfit.models.awd_lstm import LanguageModel
    from ulmfit.recipes import model_dir
    from ulmfit.recipes.config import ClassifierTrainConfig
    from ulmfit.recipes.ulmfit import classifier_from_lm
    from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
    from ulmfit.text.vocab import Vocab

    torch.manual_seed(0)
    fit_texts, texts = read_json(job["fit_texts"]), read_json(job["texts"])
    tok = Tokenizer(TokenizerConfig())
    vocab = Vocab.build(tok.tokenize_many(fit_texts), min_freq=3, max_vocab=job["max_vocab"])
    job = {**job, "vocab_size": len(vocab)}
    classes = ["negative", "neutral", "positive"]
    model, enc_cfg, head_cfg = classifier_from_lm(LanguageModel(_size(job)), _size(job), len(classes),
                                                  ClassifierTrainConfig())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir.save_text_pipeline(folder, tok.config, vocab)
        model_dir.save_classifier(folder, model, enc_cfg, head_cfg)
        model_dir.write_marker(folder, "classifier", classes=classes, recipe="ulmfit", metric="macro_f1")
        kw = {"precision": job["precision"]} if "precision" in job else {}  # else the predictor's default
        if job.get("runtime") == "onnx":
            from ulmfit.recipes.predictor import load

            clf = load(folder, runtime="onnx", **kw)
        else:
            clf = ulmfit.load(folder, **kw) if hasattr(ulmfit, "load") else __import__("ulmfit.recipes.predictor").recipes.predictor.load(folder)
        for t in texts[:5]:
            clf.predict_proba([t])  # warm-up
        lat = []
        for t in texts[: job["n_single"]]:
            t0 = time.perf_counter()
            clf.predict_proba([t])
            lat.append(time.perf_counter() - t0)
        batch = texts[: job["n_batch"]]
        t0 = time.perf_counter()
        clf.predict_proba(batch)
        s = time.perf_counter() - t0
    return {"latency_ms_median": 1000 * statistics.median(lat), "latency_ms_p95": 1000 * float(np.percentile(lat, 95)),
            "batch_texts_per_s": len(batch) / s, "n_single": len(lat), "n_batch": len(batch), "vocab_size": len(vocab),
            "precision": getattr(clf, "precision", "fp32")}


def predict_onnx(job):
    """`predict` through onnxruntime (`ulmfit.load(DIR, runtime="onnx")`: the same folder exported at load)."""
    return predict({**job, "runtime": "onnx"})


def predict_fp32(job):
    """`predict` on the exact fp32 path (`precision="fp32"`), next to the default (`auto`: bf16 encoder
    arithmetic on a CPU with native bf16)."""
    return predict({**job, "precision": "fp32"})


if __name__ == "__main__":
    speed_task_main(globals())
