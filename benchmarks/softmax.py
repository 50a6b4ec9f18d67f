"""Full vs adaptive softmax for pretraining on a CPU: perplexity reached for the same wall time.

    .venv/bin/python benchmarks/softmax.py --data runs/general-en-fwd/data --vocab 20000 --minutes 5

`--data` is the `data/` folder that `ulmfit pretrain` writes (memory-mapped train ids + valid).
Trains the same `small` AWD-LSTM twice on the same token stream, once with the full (tied) softmax
and once with PyTorch's adaptive softmax (Grave et al. 2017; clusters by frequency, our vocabularies
are frequency-sorted after the 9 special tokens), each for `--minutes` of training wall time,
evaluating validation perplexity every `--eval-every` seconds. Same optimizer (AdamW, constant rate
after a short warm-up), no AR/TAR in either. Prints a table and writes JSON: tokens/s, the final
perplexity, and how long each took to reach the perplexity the other one ended at.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ulmfit.data.lm_loader import LMLoader
from ulmfit.models.awd_lstm import PRESETS, AWDLSTM, AWDLSTMConfig, LanguageModel, detach_state
from ulmfit.models.dropout import LockedDropout
from ulmfit.text.token_docs import TokenDocs


class AdaptiveLM(nn.Module):
    """The AWD-LSTM encoder with an adaptive softmax head (untied: its clusters have their own sizes)."""

    def __init__(self, cfg: AWDLSTMConfig, cutoffs: list[int], div_value: float):
        super().__init__()
        self.encoder = AWDLSTM(cfg)
        self.output_dp = LockedDropout(cfg.p("output_p"))
        self.head = nn.AdaptiveLogSoftmaxWithLoss(cfg.emb_size, cfg.vocab_size, cutoffs, div_value=div_value)

    def loss(self, x, y, state):
        out, state = self.encoder(x, state)
        h = self.output_dp(out)
        return self.head(h.reshape(-1, h.size(-1)), y.reshape(-1)).loss, state


class FullLM(nn.Module):
    def __init__(self, cfg: AWDLSTMConfig):
        super().__init__()
        self.lm = LanguageModel(cfg)
        self.encoder = self.lm.encoder

    def loss(self, x, y, state):
        logits, state, _, _ = self.lm(x, state)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)), state


@torch.no_grad()
def valid_loss(model, loader) -> float:
    model.eval()
    total, n, state = 0.0, 0, None
    for x, y in loader:
        loss, state = model.loss(x, y, state)
        total, n = total + loss.item() * y.numel(), n + y.numel()
    model.train()
    return total / n


def train_for(model, train: LMLoader, valid: LMLoader, seconds: float, eval_every: float, lr: float, log):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.01)
    curve, spent, tokens, step, state = [], 0.0, 0, 0, None
    next_eval = eval_every
    model.train()
    while spent < seconds:
        for x, y in train:
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / 100)
            loss, state = model.loss(x, y, state)
            state = detach_state(state)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.4)
            opt.step()
            spent += time.perf_counter() - t0
            tokens += y.numel()
            step += 1
            if spent >= next_eval or spent >= seconds:
                ppl = float(np.exp(valid_loss(model, valid)))
                curve.append({"seconds": round(spent, 1), "tokens": tokens, "perplexity": round(ppl, 2)})
                log(f"  {spent:6.0f}s {tokens:>10,} tokens  valid ppl {ppl:8.1f}")
                next_eval += eval_every
            if spent >= seconds:
                break
        train.set_epoch(train.epoch + 1)
    return curve, tokens / spent


def time_to_reach(curve: list[dict], ppl: float) -> float | None:
    return next((c["seconds"] for c in curve if c["perplexity"] <= ppl), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/general-en-fwd/data")
    p.add_argument("--vocab", type=int, default=20000, help="vocabulary size of that data folder")
    p.add_argument("--preset", default="small")
    p.add_argument("--minutes", type=float, default=5.0, help="training wall time per model")
    p.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between evaluations")
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--cutoffs", default="2000,8000")
    p.add_argument("--div-value", type=float, default=4.0)
    p.add_argument("--valid-tokens", type=int, default=40000)
    p.add_argument("--json", default="benchmarks/results/softmax.json")
    a = p.parse_args()
    log = lambda m: print(m, flush=True)  # noqa: E731

    data = Path(a.data)
    train_docs = TokenDocs.load(data / "train", mmap=True)
    valid_docs = TokenDocs.load(data / "valid", mmap=False)
    n_valid = int(np.searchsorted(valid_docs.offsets, a.valid_tokens))
    valid_docs = valid_docs.subset(np.arange(max(1, n_valid)))
    cfg = AWDLSTMConfig(vocab_size=a.vocab, drop_mult=0.3, **PRESETS[a.preset])
    cutoffs = [int(c) for c in a.cutoffs.split(",")]
    results = {}
    for name, make in [("full softmax (tied)", lambda: FullLM(cfg)),
                       (f"adaptive softmax {cutoffs}, div {a.div_value:g}", lambda: AdaptiveLM(cfg, cutoffs, a.div_value))]:
        torch.manual_seed(0)
        model = make()
        train = LMLoader(train_docs, bs=a.bs, bptt=a.bptt, shuffle=True, variable_bptt=True, seed=0)
        valid = LMLoader(valid_docs, bs=8, bptt=a.bptt, shuffle=False)
        log(f"{name}: {sum(q.numel() for q in model.parameters()) / 1e6:.2f}M parameters")
        curve, tps = train_for(model, train, valid, a.minutes * 60, a.eval_every, a.lr, log)
        results[name] = {"parameters": sum(q.numel() for q in model.parameters()), "tokens_per_s": round(tps),
                         "final_perplexity": curve[-1]["perplexity"], "curve": curve}
    (full, fr), (adap, ar) = results.items()
    fr["seconds_to_other_final"] = time_to_reach(fr["curve"], ar["final_perplexity"])
    ar["seconds_to_other_final"] = time_to_reach(ar["curve"], fr["final_perplexity"])
    print(f"\n{'head':36s} {'params':>8s} {'tokens/s':>9s} {'ppl @ ' + str(a.minutes) + ' min':>12s} {'s to other final':>17s}")
    for name, r in results.items():
        reach = r["seconds_to_other_final"]
        print(f"{name:36s} {r['parameters'] / 1e6:7.2f}M {r['tokens_per_s']:9,d} {r['final_perplexity']:12.1f} "
              f"{'never' if reach is None else f'{reach:.0f}':>17s}")
    print(f"\nspeed ratio adaptive/full: {ar['tokens_per_s'] / fr['tokens_per_s']:.2f}x")
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "args": vars(a), "results": results}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
