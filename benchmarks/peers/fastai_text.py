"""fastai 2.8 ULMFiT as in the fastai book, chapter 10: fine-tune the AWD-LSTM language model on the
training texts, then a classifier with gradual unfreezing (fit_one_cycle; freeze_to(-2), (-3),
unfreeze; discriminative rates slice(lr / 2.6**4, lr)). Runs inside benchmarks/.venvs/fastai:

    benchmarks/.venvs/fastai/bin/python benchmarks/peers/fastai_text.py JOB.json RESULT.json

JOB: {"train", "valid", "test" (CSV text,label), "unlabeled" (CSV or null: more LM text),
"seed", "workdir", "params": {emb_sz, n_hid, n_layers, max_vocab, min_freq, lm_bs, bptt,
lm_drop_mult, lm_frozen_epochs, lm_epochs, lm_frozen_lr, lm_lr, clf_bs, clf_drop_mult,
clf_epochs [4], clf_lrs [4], wd, pretrained_pth, pretrained_itos}}. With `pretrained_pth`
(an `ulmfit.recipes.fastai_export` file) the LM starts from it via `learn.load_pretrained`, else
from random weights (`pretrained=False`; fastai's WT103 download cannot work offline).
RESULT: test predictions, training seconds (LM, classifier), vocabulary size, per-stage metrics.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import peer_main  # noqa: E402

DEFAULTS = dict(emb_sz=128, n_hid=256, n_layers=3, max_vocab=30000, min_freq=3, lm_bs=32, bptt=70,
                lm_drop_mult=0.3, lm_frozen_epochs=1, lm_epochs=4, lm_frozen_lr=2e-2, lm_lr=None,
                clf_bs=64, clf_seq_len=72, clf_drop_mult=0.5, clf_epochs=[1, 1, 1, 3], clf_lrs=None, wd=None,
                pretrained_pth=None, pretrained_itos=None, num_workers=0)


def history(learn, stage: str) -> list[dict]:
    """The epochs of the last fit (the recorder starts afresh at each fit)."""
    names = learn.recorder.metric_names[1:-1]  # drop 'epoch' and 'time'
    return [{"stage": stage, **dict(zip(names, map(float, v)))} for v in learn.recorder.values]


def run(job):
    import pandas as pd
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.text.all import (AWD_LSTM, CategoryBlock, ColReader, ColSplitter, DataBlock, F1Score, Perplexity,
                                 TextBlock, accuracy, awd_lstm_clas_config, awd_lstm_lm_config,
                                 language_model_learner, set_seed, text_classifier_learner)

    p = {**DEFAULTS, **job.get("params", {})}
    pretrained = bool(p["pretrained_pth"])
    # Rates: the book's with a pretrained LM (LM 2e-2 frozen, 2e-3 unfrozen; classifier 2e-2, 1e-2,
    # 5e-3, 1e-3); from scratch the same rule as ulmfit's own defaults (LM 2e-2; 2e-2, 1e-2, 1e-2, 5e-3).
    lm_lr = p["lm_lr"] or (2e-3 if pretrained else 2e-2)
    clf_lrs = p["clf_lrs"] or ([2e-2, 1e-2, 5e-3, 1e-3] if pretrained else [2e-2, 1e-2, 1e-2, 5e-3])
    torch.set_num_threads(int(job.get("threads") or torch.get_num_threads()))
    set_seed(job["seed"], reproducible=True)
    work = Path(job["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    read = lambda f: pd.read_csv(f, dtype=str, keep_default_na=False)  # noqa: E731
    train, valid, test = read(job["train"]), read(job["valid"]), read(job["test"])
    lm_text = list(train["text"]) + (list(read(job["unlabeled"])["text"]) if job.get("unlabeled") else [])

    t0 = time.perf_counter()
    df_lm = pd.DataFrame({"text": lm_text + list(valid["text"]),
                          "is_valid": [False] * len(lm_text) + [True] * len(valid)})
    blk = DataBlock(blocks=TextBlock.from_df("text", is_lm=True, min_freq=p["min_freq"], max_vocab=p["max_vocab"]),
                    get_x=ColReader("text"), splitter=ColSplitter("is_valid"))
    dls_lm = blk.dataloaders(df_lm, bs=p["lm_bs"], seq_len=p["bptt"], num_workers=p["num_workers"])
    config = awd_lstm_lm_config.copy()
    config.update(emb_sz=p["emb_sz"], n_hid=p["n_hid"], n_layers=p["n_layers"])
    kw = {} if p["wd"] is None else {"wd": p["wd"]}
    learn = language_model_learner(dls_lm, AWD_LSTM, config=config, drop_mult=p["lm_drop_mult"], pretrained=False,
                                   metrics=[accuracy, Perplexity()], path=work, **kw)
    learn.remove_cbs(ProgressCallback)
    t_lm_data = time.perf_counter() - t0
    lm_hist = []
    if pretrained:
        learn.load_pretrained(p["pretrained_pth"], p["pretrained_itos"])  # matches rows by token, then freezes
        if p["lm_frozen_epochs"]:
            learn.fit_one_cycle(p["lm_frozen_epochs"], p["lm_frozen_lr"])
            lm_hist += history(learn, "frozen")
        learn.unfreeze()
    if p["lm_epochs"]:
        learn.fit_one_cycle(p["lm_epochs"], lm_lr)
        lm_hist += history(learn, "all")
    learn.save_encoder("enc")
    t_lm = time.perf_counter() - t0

    t1 = time.perf_counter()
    df = pd.concat([train.assign(is_valid=False), valid.assign(is_valid=True)], ignore_index=True)
    blk = DataBlock(blocks=(TextBlock.from_df("text", vocab=dls_lm.vocab, seq_len=p["clf_seq_len"]), CategoryBlock),
                    get_x=ColReader("text"), get_y=ColReader("label"), splitter=ColSplitter("is_valid"))
    dls = blk.dataloaders(df, bs=p["clf_bs"], seq_len=p["clf_seq_len"], num_workers=p["num_workers"])
    ccfg = awd_lstm_clas_config.copy()
    ccfg.update(emb_sz=p["emb_sz"], n_hid=p["n_hid"], n_layers=p["n_layers"])
    clf = text_classifier_learner(dls, AWD_LSTM, config=ccfg, drop_mult=p["clf_drop_mult"], pretrained=False,
                                  metrics=[accuracy, F1Score(average="macro")], path=work, seq_len=p["clf_seq_len"])
    clf.remove_cbs(ProgressCallback)
    clf.load_encoder("enc")  # freezes all but the head
    e, lrs = p["clf_epochs"], clf_lrs
    stages = [(None, e[0], lrs[0]), (-2, e[1], lrs[1]), (-3, e[2], lrs[2]), (0, e[3], lrs[3])]
    clf_hist = []
    for k, (freeze, n, lr) in enumerate(stages):
        if freeze == 0:
            clf.unfreeze()
        elif freeze is not None:
            clf.freeze_to(freeze)
        if n:
            clf.fit_one_cycle(n, lr if k == 0 else slice(lr / 2.6 ** 4, lr))
            clf_hist += history(clf, ["head", "freeze_to(-2)", "freeze_to(-3)", "unfreeze"][k])
    t_clf = time.perf_counter() - t1

    t2 = time.perf_counter()
    dl = clf.dls.test_dl(test)
    preds, _ = clf.get_preds(dl=dl)
    classes = list(clf.dls.vocab[1])
    pred = [classes[i] for i in preds.argmax(1).tolist()]
    return {"test_pred": pred, "train_s": round(t_lm + t_clf, 2), "predict_s": round(time.perf_counter() - t2, 2),
            "details": {"lm_s": round(t_lm, 2), "lm_data_s": round(t_lm_data, 2), "clf_s": round(t_clf, 2),
                        "vocab_size": len(dls_lm.vocab), "lm_tokens_texts": len(lm_text), "pretrained": pretrained,
                        "lm_lr": lm_lr, "clf_lrs": clf_lrs, "params": p, "lm_history": lm_hist,
                        "clf_history": clf_hist, "model_selection": "last epoch (as in the book)"}}


if __name__ == "__main__":
    peer_main(run)
