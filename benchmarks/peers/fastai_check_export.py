"""Inside the fastai venv: load an `export_fastai` folder the way a fastai user would
(`language_model_learner(..., pretrained=False)` + `learn.load_pretrained(pth, itos)`) and compare its
eval-mode logits with ours on the same token ids. Run by benchmarks/check_fastai_export.py:

    benchmarks/.venvs/fastai/bin/python benchmarks/peers/fastai_check_export.py JOB.json RESULT.json

JOB: {"export_dir", "ids": [[...]], "logits": [[[...]]] (ours), "texts": [...]}.
"""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import peer_main  # noqa: E402


def run(job):
    import pandas as pd
    import torch
    from fastai.text.all import AWD_LSTM, TextDataLoaders, awd_lstm_lm_config, language_model_learner

    d = Path(job["export_dir"])
    fc = json.loads((d / "fastai_config.json").read_text())
    itos = pickle.loads((d / fc["itos"]).read_bytes())
    config = awd_lstm_lm_config.copy()
    config.update(emb_sz=fc["emb_sz"], n_hid=fc["n_hid"], n_layers=fc["n_layers"])
    df = pd.DataFrame({"text": job["texts"] * 4})
    dls = TextDataLoaders.from_df(df, text_col="text", is_lm=True, text_vocab=itos, valid_pct=0.25, seed=0, bs=2,
                                  seq_len=8, num_workers=0)
    learn = language_model_learner(dls, AWD_LSTM, config=config, pretrained=False)
    learn.load_pretrained(str(d / fc["weights"]), str(d / fc["itos"]))
    model = learn.model.eval()
    model.reset()
    with torch.no_grad():
        fa = model(torch.tensor(job["ids"]))[0]
    ours = torch.tensor(job["logits"])
    real = torch.tensor([t != "xxfake" for t in itos])  # fastai maps duplicate 'xxfake' rows to the last one
    diff = (fa[..., real] - ours[..., real]).abs().max().item()
    sd = torch.load(d / fc["weights"], weights_only=True)
    return {"loaded": True, "dls_vocab_len": len(dls.vocab), "export_vocab_len": len(itos),
            "max_abs_logit_diff": diff, "same_argmax": bool((fa[..., real].argmax(-1) == ours[..., real].argmax(-1)).all()),
            "keys_match_model_order": list(sd) == list(learn.model.state_dict()),
            "frozen_after_load": [any(p.requires_grad for p in g) for g in learn.splitter(learn.model)]}


if __name__ == "__main__":
    peer_main(run)
