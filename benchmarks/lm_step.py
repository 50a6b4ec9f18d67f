"""One LM training step, A/B in one process: the decoder + `F.cross_entropy` on full logits (the
step before issue 20) against the fused `linear_cross_entropy` (models/linear_ce.py), in fp32 and
in bf16 autocast. The variants take turns, round after round, so a shared machine's drifting load
hits them alike; each variant's median round is reported.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_step.py [--preset small] [--vocab 9472] [--rounds 7]

Step = forward (AWD-LSTM, AR/TAR) + backward + clip + AdamW, bs 32 x bptt 70 random tokens, the
hidden state carried as in training. Writes benchmarks/results/lm_step.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info, write_json  # noqa: E402

from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel, ar_tar_loss, detach_state  # noqa: E402
from ulmfit.train.optim import make_optimizer, param_groups  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab", type=int, default=9472, help="vocabulary size (9,472: the tweets at min_freq 3)")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=str(RESULTS / "lm_step.json"))
    a = p.parse_args()
    torch.manual_seed(0)
    model = LanguageModel(AWDLSTMConfig.preset(a.preset, vocab_size=a.vocab, drop_mult=0.3))
    groups = model.layer_groups()
    opt = make_optimizer(param_groups(groups, 1e-3, weight_decay=0.1))
    x, y = torch.randint(0, a.vocab, (a.bs, a.bptt)), torch.randint(0, a.vocab, (a.bs, a.bptt))
    states: dict = {}

    def step(fused: bool, prec: str) -> None:
        key = (fused, prec)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else nullcontext()
        with ctx:
            dropped, state, raw = model.features(x, detach_state(states.get(key)))
            if fused:
                loss = model.cross_entropy(dropped, y)
            else:
                logits = model.decoder(dropped)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            loss = loss + ar_tar_loss(raw, dropped)
        states[key] = state
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    variants = [(False, "fp32"), (True, "fp32"), (False, "bf16"), (True, "bf16")]
    times: dict = {v: [] for v in variants}
    for v in variants:  # warm-up (oneDNN primitives, allocator)
        step(*v)
    for _ in range(a.rounds):
        for v in variants:
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step(*v)
            times[v].append(a.bs * a.bptt * a.steps / (time.perf_counter() - t0))
    base = statistics.median(times[(False, "fp32")])
    rows = []
    print(f"{'softmax':>10} {'precision':>9} {'tokens/s':>9} {'vs unfused fp32':>16}   rounds")
    for (fused, prec), ts in times.items():
        med = statistics.median(ts)
        rows.append({"fused": fused, "precision": prec, "tokens_per_s": round(med), "ratio": round(med / base, 2),
                     "rounds": [round(t) for t in ts]})
        print(f"{'fused' if fused else 'full':>10} {prec:>9} {med:>9,.0f} {med / base:>15.2f}x   {[round(t) for t in ts]}")
    write_json(Path(a.json), {"machine": machine_info(), "threads": torch.get_num_threads(), "settings": vars(a),
                              "rows": rows})
    print(f"written: {a.json}")


if __name__ == "__main__":
    main()
