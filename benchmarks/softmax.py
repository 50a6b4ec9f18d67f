"""Full vs adaptive softmax on a CPU: the perplexity each reaches for the same CPU time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/softmax.py finetune --max-train-tokens 300000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/softmax.py pretrain --data runs/spam-lm/data --cpu-minutes 4
    /work/bin/quiet env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/softmax.py step --rounds 7   # idle machine

Both compare the library's `LanguageModel` with `softmax="full"` (the tied linear decoder, fused
cross-entropy) and `softmax="adaptive"` (models/adaptive_softmax.py: tied adaptive softmax,
`--cutoffs`), and count CPU seconds of this process (`time.process_time()`, one torch thread):
unlike wall time they do not grow while a shared machine pauses or slows the job.

`finetune`: the library's LM phase (`recipes/ulmfit.py finetune_lm`, what `fit`, `finetune-lm` and
`distill` run) from the shipped general-en on the tweets' training text (`--max-train-tokens` of
it), with the library's defaults (1 frozen + `--epochs` one-cycle epochs, bs 32, AR/TAR, bf16 where
the CPU has it) except early stopping (off, to see every epoch) — once with each head, one after
the other in this process. Per epoch: validation perplexity (exact for both heads), training
tokens/s from CPU time, cumulative CPU seconds; then the CPU time each took to reach the other's
best perplexity (linear interpolation between epochs).

`step`: one training step (forward with AR/TAR, backward, clip, AdamW) on real batches of the
tweets (bs 32, bptt 70), full vs adaptive in fp32 and bf16, the variants in turn round after round;
median tokens/s of wall time: the speed figure, for a quiet (idle) machine.

`pretrain`: the same `--preset` LM from scratch on a `ulmfit pretrain` data folder (memory-mapped
train ids + valid), AdamW at a constant rate after a 100-step warm-up, no AR/TAR; the two heads are
trained ALTERNATELY, `--eval-every` CPU seconds each in turn, so that they see the same machine
load, until each has had `--cpu-minutes`; validation perplexity after each turn.

Prints tables and writes benchmarks/results/softmax_<mode><--tag>.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, table, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
HEADS = ("full", "adaptive")


def time_to_reach(curve: list[dict], ppl: float, key: str = "cpu_s") -> float | None:
    """CPU seconds at which `curve` (ordered points with `key` and "perplexity") first reaches `ppl`,
    interpolated linearly between the two points around it; None if it never does."""
    prev = None
    for c in curve:
        if c["perplexity"] <= ppl:
            if prev is None or prev["perplexity"] == c["perplexity"]:
                return c[key]
            f = (prev["perplexity"] - ppl) / (prev["perplexity"] - c["perplexity"])
            return round(prev[key] + f * (c[key] - prev[key]), 1)
        prev = c
    return None


def compare(curves: dict[str, list[dict]]) -> dict:
    """Each head's best perplexity, and the CPU seconds each took to reach the other's best."""
    best = {h: min(c["perplexity"] for c in curves[h]) for h in HEADS}
    out = {h: {"best_perplexity": best[h],
               "cpu_s_to_own_best": next(c["cpu_s"] for c in curves[h] if c["perplexity"] == best[h])} for h in HEADS}
    target = max(best.values())  # the perplexity both reached
    for h in HEADS:
        out[h]["cpu_s_to_common"] = time_to_reach(curves[h], target)
    out["common_perplexity"] = target
    f, a = out["full"]["cpu_s_to_common"], out["adaptive"]["cpu_s_to_common"]
    out["cpu_ratio_full_over_adaptive_at_common"] = round(f / a, 2) if f and a else None
    return out


# ----------------------------------------------------------------------------------------- finetune
class CpuClock:
    """A run_phase callback: cumulative CPU seconds of this process at the end of every epoch."""

    def __init__(self):
        self.t0, self.cpu, self.epoch_cpu = time.process_time(), {}, {}

    def on_epoch_end(self, record: dict) -> None:
        now = time.process_time()
        self.cpu[int(record["epoch"])] = round(now - self.t0, 2)


def finetune(a) -> dict:
    import pandas as pd

    from ulmfit.data.fetch import fetch_tweets
    from ulmfit.recipes.config import LMTrainConfig
    from ulmfit.recipes.model_dir import load_text_pipeline, resolve_pretrained
    from ulmfit.recipes.ulmfit import finetune_lm
    from ulmfit.text.vocab import Vocab
    from ulmfit.train.precision import resolve_precision

    pretrained = resolve_pretrained(a.pretrained)
    texts = list(pd.read_csv(fetch_tweets()["train"], dtype=str, keep_default_na=False)["text"])
    tokenizer = load_text_pipeline(pretrained)[0]
    tokens = tokenizer.tokenize_many(texts, n_workers=1)
    precision = resolve_precision(a.precision)
    curves, runs = {}, {}
    for head in a.heads:
        cfg = LMTrainConfig(epochs=a.epochs, frozen_epochs=a.frozen_epochs, lr=a.lr, max_train_tokens=a.max_train_tokens,
                            patience=None, softmax=head, cutoffs=tuple(a.cutoffs))
        vocab = Vocab.build(tokens, min_freq=cfg.min_freq, max_vocab=cfg.max_vocab)
        clock = CpuClock()
        t0 = time.perf_counter()
        out = Path(a.work) / head
        shutil.rmtree(out, ignore_errors=True)
        res = finetune_lm(tokens, out, cfg, tokenizer=tokenizer, vocab=vocab, pretrained=str(pretrained), seed=a.seed,
                          precision=precision, callbacks=(clock,), log=lambda m: print(f"[{head}] {m}", flush=True))
        curve, prev = [], 0.0
        for r in res.history:
            e = int(r["epoch"])
            cpu = clock.cpu[e]
            n_tok = r.get("train_tokens", None)
            curve.append({"epoch": e, "stage": r["stage"], "perplexity": round(r["perplexity"], 2),
                          "accuracy": round(r["accuracy"], 4), "cpu_s": cpu, "epoch_cpu_s": round(cpu - prev, 2),
                          "wall_s": round(r["seconds"], 1), "log_tokens_per_s": round(r["train_tokens_per_s"])}
                         | ({"train_tokens": n_tok} if n_tok else {}))
            prev = cpu
        curves[head] = curve
        runs[head] = {"vocab": len(vocab), "wall_s": round(time.perf_counter() - t0, 1),
                      "lm_config": res.config.to_dict(), "parameters": sum(p.numel() for p in res.lm.parameters())}
        print(table(curve, ["epoch", "stage", "perplexity", "accuracy", "epoch_cpu_s", "cpu_s", "log_tokens_per_s"]),
              flush=True)
    return {"curves": curves, "runs": runs, "precision": precision}


# ----------------------------------------------------------------------------------------- pretrain
class Trainer:
    """One LM trained in CPU-time slices (`run(seconds)`), evaluated after each slice."""

    def __init__(self, model, train, valid, lr: float, precision: str):
        import torch

        self.torch, self.model, self.train, self.valid, self.lr = torch, model, train, valid, lr
        self.autocast = precision == "bf16"
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.01)
        self.cpu, self.tokens, self.step, self.state, self.batches = 0.0, 0, 0, None, iter(train)
        self.curve = []

    def _batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.train.set_epoch(self.train.epoch + 1)
            self.batches = iter(self.train)
            return next(self.batches)

    def run(self, seconds: float) -> None:
        from ulmfit.models.awd_lstm import detach_state

        torch, model = self.torch, self.model
        model.train()
        end = self.cpu + seconds
        while self.cpu < end:
            x, y = self._batch()
            c0 = time.process_time()
            for g in self.opt.param_groups:
                g["lr"] = self.lr * min(1.0, (self.step + 1) / 100)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                dropped, state, _ = model.features(x, self.state)
                loss = model.cross_entropy(dropped, y)
            self.state = detach_state(state)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.4)
            self.opt.step()
            self.cpu += time.process_time() - c0
            self.tokens += y.numel()
            self.step += 1

    def evaluate(self) -> float:
        from ulmfit.train.tasks import LMTask

        with self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.autocast):
            ppl = LMTask().evaluate(self.model, self.valid)["perplexity"]
        self.curve.append({"cpu_s": round(self.cpu, 1), "tokens": self.tokens, "perplexity": round(ppl, 2),
                           "tokens_per_cpu_s": round(self.tokens / self.cpu)})
        return ppl


def pretrain(a) -> dict:
    import torch

    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.models.adaptive_softmax import adaptive_cutoffs
    from ulmfit.models.awd_lstm import PRESETS, AWDLSTMConfig, LanguageModel
    from ulmfit.text.token_docs import TokenDocs
    from ulmfit.text.vocab import Vocab
    from ulmfit.train.precision import resolve_precision

    data = Path(a.data)
    vocab_size = len(Vocab.load(data.parent / "vocab.json"))
    train_docs = TokenDocs.load(data / "train", mmap=True)
    valid_docs = TokenDocs.load(data / "valid", mmap=False)
    n_valid = min(len(valid_docs), int(np.searchsorted(valid_docs.offsets, a.valid_tokens)))
    valid_docs = valid_docs.subset(np.arange(max(1, n_valid)))
    precision = resolve_precision(a.precision)
    trainers = {}
    for head in a.heads:
        cutoffs = adaptive_cutoffs(a.cutoffs, vocab_size) if head == "adaptive" else ()
        cfg = AWDLSTMConfig(vocab_size=vocab_size, drop_mult=a.drop_mult, **PRESETS[a.preset],
                            softmax=head, cutoffs=cutoffs)
        torch.manual_seed(a.seed)
        model = LanguageModel(cfg)
        train = LMLoader(train_docs, bs=a.bs, bptt=a.bptt, shuffle=True, variable_bptt=True, seed=a.seed)
        valid = LMLoader(valid_docs, bs=8, bptt=a.bptt, shuffle=False)
        trainers[head] = Trainer(model, train, valid, a.lr, precision)
        print(f"{head}: vocab {vocab_size:,}, cutoffs {list(cutoffs)}, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    while any(t.cpu < a.cpu_minutes * 60 for t in trainers.values()):
        for head, t in trainers.items():
            if t.cpu < a.cpu_minutes * 60:
                t.run(a.eval_every)
                ppl = t.evaluate()
                print(f"  {head:8s} {t.cpu:6.0f} CPU s {t.tokens:>10,} tokens  {t.tokens / t.cpu:6,.0f} tokens/CPU s  "
                      f"valid ppl {ppl:8.1f}", flush=True)
    return {"curves": {h: t.curve for h, t in trainers.items()}, "precision": precision, "vocab": vocab_size}


# ----------------------------------------------------------------------------------------- step
def step(a) -> dict:
    """One LM training step on the tweets' real batches (targets as frequent as in the text), each head
    in fp32 and bf16, variants in turn round after round (benchmarks/lm_step.py's method): median
    tokens/s of wall time, for an idle machine (`/work/bin/quiet`)."""
    import statistics
    from contextlib import nullcontext

    import pandas as pd
    import torch

    from ulmfit.data.fetch import fetch_tweets
    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.models.adaptive_softmax import adaptive_cutoffs
    from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel, ar_tar_loss, detach_state
    from ulmfit.recipes.model_dir import load_text_pipeline, resolve_pretrained
    from ulmfit.text.vocab import Vocab
    from ulmfit.train.optim import make_optimizer, param_groups

    texts = list(pd.read_csv(fetch_tweets()["train"], dtype=str, keep_default_na=False)["text"])
    tokens = load_text_pipeline(resolve_pretrained(a.pretrained))[0].tokenize_many(texts, n_workers=1)
    vocab = Vocab.build(tokens, min_freq=3, max_vocab=30000)
    loader = LMLoader(vocab.encode_many(tokens), bs=32, bptt=70, shuffle=True, variable_bptt=False, seed=a.seed)
    batches = [b for _, b in zip(range(a.steps * 2), loader)]
    models, opts, states = {}, {}, {}
    for head in a.heads:
        torch.manual_seed(a.seed)
        cut = adaptive_cutoffs(a.cutoffs, len(vocab)) if head == "adaptive" else ()
        models[head] = LanguageModel(AWDLSTMConfig.preset(a.preset, vocab_size=len(vocab), drop_mult=0.3,
                                                          softmax=head, cutoffs=cut))
        opts[head] = make_optimizer(param_groups(models[head].layer_groups(), 1e-3, weight_decay=0.1))

    def run(head: str, prec: str, i: int) -> None:
        model, (x, y) = models[head], batches[i % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else nullcontext():
            dropped, state, raw = model.features(x, detach_state(states.get((head, prec))))
            loss = model.cross_entropy(dropped, y) + ar_tar_loss(raw, dropped)
        states[(head, prec)] = state
        opts[head].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opts[head].step()

    variants = [(h, p) for p in ("fp32", "bf16") for h in a.heads]
    times = {v: [] for v in variants}
    for v in variants:
        run(*v, 0)
    for r in range(a.rounds):
        for v in variants:
            t0 = time.perf_counter()
            for i in range(a.steps):
                run(*v, r * a.steps + i)
            times[v].append(32 * 70 * a.steps / (time.perf_counter() - t0))
    rows = [{"head": h, "precision": p, "tokens_per_s": round(statistics.median(ts)), "rounds": [round(t) for t in ts]}
            for (h, p), ts in times.items()]
    print(table(rows, ["head", "precision", "tokens_per_s", "rounds"]))
    for p in ("fp32", "bf16"):
        r = {row["head"]: row["tokens_per_s"] for row in rows if row["precision"] == p}
        if len(r) == 2:
            print(f"{p}: adaptive / full = {r['adaptive'] / r['full']:.2f}x")
    return {"rows": rows, "vocab": len(vocab), "cutoffs": list(adaptive_cutoffs(a.cutoffs, len(vocab)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("finetune", "pretrain", "step"))
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    p.add_argument("--cutoffs", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the JSON's name (softmax_<mode><tag>.json)")
    # finetune
    p.add_argument("--pretrained", default="general-en")
    p.add_argument("--epochs", type=int, default=4, help="unfrozen epochs (lm.epochs' default)")
    p.add_argument("--frozen-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="default: 2e-2 finetune (FitConfig.resolved() for the "
                   "small general-en), 3e-3 pretrain")
    p.add_argument("--max-train-tokens", type=int, default=300_000)
    p.add_argument("--work", default="/tmp/ulmfit-softmax-bench")
    # pretrain
    p.add_argument("--data", default="runs/general-en-fwd/data", help="a `ulmfit pretrain` run's data/ folder")
    p.add_argument("--preset", default="small")
    p.add_argument("--drop-mult", type=float, default=0.3)
    p.add_argument("--cpu-minutes", type=float, default=4.0, help="training CPU time per head")
    p.add_argument("--eval-every", type=float, default=60.0, help="CPU seconds of training per turn")
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--valid-tokens", type=int, default=40000)
    # step
    p.add_argument("--steps", type=int, default=4, help="step mode: timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    if a.lr is None:
        a.lr = 2e-2 if a.mode == "finetune" else 3e-3
    import torch

    t0 = time.perf_counter()
    result = {"finetune": finetune, "pretrain": pretrain, "step": step}[a.mode](a)
    if len(a.heads) == 2 and a.mode != "step":
        result["comparison"] = compare(result["curves"])
        c = result["comparison"]
        print(f"\ncommon perplexity {c['common_perplexity']:.1f}: full reached it after "
              f"{c['full']['cpu_s_to_common']} CPU s, adaptive after {c['adaptive']['cpu_s_to_common']} CPU s "
              f"(full/adaptive {c['cpu_ratio_full_over_adaptive_at_common']}x); best perplexity full "
              f"{c['full']['best_perplexity']:.1f}, adaptive {c['adaptive']['best_perplexity']:.1f}")
    result.update({"mode": a.mode, "args": vars(a), "machine": machine_info(), "torch_threads": torch.get_num_threads(),
                   "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": round(time.perf_counter() - t0, 1)})
    write_json(RESULTS / f"softmax_{a.mode}{a.tag}.json", result)
    print(f"wrote {RESULTS / f'softmax_{a.mode}{a.tag}.json'}")


if __name__ == "__main__":
    main()
