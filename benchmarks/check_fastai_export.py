"""Check that fastai 2.8 loads a model written by `ulmfit.recipes.fastai_export.export_fastai` and
computes the same logits as ours.

    .venv/bin/python benchmarks/check_fastai_export.py [--lm runs/general-en] [--out benchmarks/results/work/fastai-export]

Exports the LM folder, computes our eval-mode logits on a few tokenized sentences, then (in the
fastai venv, benchmarks/setup_peers.sh) builds `language_model_learner(dls, AWD_LSTM,
pretrained=False)` with the exported sizes, calls `learn.load_pretrained(pth, itos)` and compares
logits. Writes benchmarks/results/fastai_export_check.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PEER_PY, RESULTS, machine_info, package_versions, read_json, run_measured, write_json  # noqa: E402

from ulmfit.recipes import model_dir  # noqa: E402
from ulmfit.recipes.fastai_export import export_fastai  # noqa: E402

TEXTS = ["The flight was delayed again , thanks a lot .", "I love the new seats on this plane !",
         "What time does the gate open tomorrow ?"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lm", default="runs/general-en")
    p.add_argument("--out", default=str(RESULTS / "work" / "fastai-export"))
    a = p.parse_args()
    out = Path(a.out) / Path(a.lm).name
    export_fastai(a.lm, out, overwrite=True)
    lm, tok, vocab = model_dir.load_lm(a.lm)
    toks = tok.tokenize_many(TEXTS)
    n = min(map(len, toks))
    ids = [vocab.encode(t)[:n] if hasattr(vocab, "encode") else [vocab.stoi.get(w, 0) for w in t[:n]] for t in toks]
    ids = [[int(i) for i in row] for row in ids]
    with torch.no_grad():
        logits = lm(torch.tensor(ids))[0]
    job = {"export_dir": str(out), "ids": ids, "logits": logits.tolist(), "texts": TEXTS}
    work = Path(a.out)
    write_json(work / "check_job.json", job)
    r = run_measured([str(PEER_PY["fastai"]), str(Path(__file__).parent / "peers" / "fastai_check_export.py"),
                      str(work / "check_job.json"), str(work / "check_result.json")], log_path=work / "check.log")
    if r["rc"] != 0:
        sys.exit(f"fastai check failed (rc {r['rc']}); see {work / 'check.log'}")
    res = read_json(work / "check_result.json")
    res.update({"lm": a.lm, "export": str(out), "tokens_per_text": n, "machine": machine_info(),
                "ours_versions": package_versions()})
    write_json(RESULTS / "fastai_export_check.json", res)
    print(f"fastai loaded {out} with load_pretrained: max |logit difference| {res['max_abs_logit_diff']:.2e}, "
          f"same argmax {res['same_argmax']}, key order = fastai model's {res['keys_match_model_order']}")


if __name__ == "__main__":
    main()
