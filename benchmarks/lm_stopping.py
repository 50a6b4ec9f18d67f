"""Should language-model fine-tuning stop on validation loss or on next-word accuracy? Measured.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_stopping.py --precision bf16 --budgets 500 --clf-seeds 0 1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_stopping.py --precision bf16 --budgets 2000 --clf-seeds 0 1 --clf-epochs picks
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_stopping.py --precision fp32 --lm-patience 2 --budgets 500 \\
        --clf-seeds 0 1 --clf-epochs picks                              # the bf16 validation's fp32 arm
    .venv/bin/python benchmarks/lm_stopping.py --precision bf16 --summary-only   # table, JSON and PNG again

(defaults: --epochs 14 --max-train-tokens 100000 --lm-lr 2e-2, the sizing of docs/GUIDE.md's answer;
on the 2-core EPYC one bf16 LM epoch is ~10 CPU s, one classifier 15-30 CPU s.)

The forward LM is fine-tuned from the shipped general-en on the training texts (ULMFiT §3.2: one
frozen epoch, then `--epochs` unfrozen ones, one-cycle, never stopped early), keeping the weights
of EVERY epoch (`finetune_lm(keep_epochs=True)`). Then the SAME classifier (the library's defaults
for `ulmfit fit`, the same seeded stratified label sample as benchmarks/accuracy.py draws, the same
classifier seeds) is trained from each epoch's LM, selected on the validation split and scored on
the test split (argmax macro-F1: the classifier itself, without the tuned decision rule `fit` adds
afterwards, so that only the starting LM differs). For each budget the table lists, per LM epoch,
the LM's validation loss / perplexity / accuracy next to the classifiers' validation and test
macro-F1, and which epoch each stopping criterion picks: the LM's lowest validation loss, its
highest next-word accuracy, the last epoch.

`--precision fp32|bf16|auto` (the work folder and the JSON carry it): the bf16 validation runs the
same experiment in both precisions (`--clf-epochs picks` trains classifiers only from the epochs
the criteria pick). CPU seconds (process time, one thread: meaningful while a heavy job is paused,
unlike wall time) are recorded per LM epoch and per classifier.

Cells (one JSON per LM epoch, budget and classifier seed) are cached in --work, so a rerun resumes.
Writes benchmarks/results/lm_stopping_<dataset>_<precision>.json and a PNG beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, table, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class CpuClock:
    """A run_phase callback: CPU seconds of this process at the end of every epoch."""

    def __init__(self):
        self.t0, self.cpu = time.process_time(), {}

    def on_epoch_end(self, record: dict) -> None:
        now = time.process_time()
        self.cpu[int(record["epoch"])] = round(now - self.t0, 2)
        self.t0 = now


def load_data(dataset: str):
    import pandas as pd

    if dataset == "tweets":
        from ulmfit.data.fetch import fetch_tweets
        paths = fetch_tweets()
    else:
        from ulmfit.data.fetch_spam import fetch_spam
        paths = fetch_spam()
    return {k: pd.read_csv(v, dtype=str, keep_default_na=False) for k, v in paths.items()}


def finetune(a, work: Path, tokens, tokenizer, pretrained) -> list[dict]:
    """The LM phase once (cached): every epoch's weights in work/lm/epochs, its log and CPU times."""
    from ulmfit.recipes.config import LMTrainConfig
    from ulmfit.recipes.model_dir import write_marker
    from ulmfit.recipes.ulmfit import finetune_lm

    lm_dir, done = work / "lm", work / "lm" / "done.json"
    if done.exists():
        return json.loads(done.read_text())["history"]
    cfg = LMTrainConfig(epochs=a.epochs, frozen_epochs=a.frozen_epochs, lr=a.lm_lr,
                        max_train_tokens=a.max_train_tokens, patience=a.lm_patience)
    clock = CpuClock()
    t0 = time.perf_counter()
    res = finetune_lm(tokens["train"], lm_dir, cfg, tokenizer=tokenizer, pretrained=str(pretrained), seed=a.seed,
                      precision=a.precision, keep_epochs=True, callbacks=(clock,), log=lambda m: print(m, flush=True))
    history = [{k: r[k] for k in ("epoch", "stage", "train_loss", "valid_loss", "perplexity", "accuracy", "seconds",
                                  "train_tokens_per_s") if k in r} | {"cpu_s": clock.cpu.get(int(r["epoch"]))}
               for r in res.history]
    write_marker(lm_dir, "lm", direction="fwd")
    write_json(done, {"history": history, "config": cfg.__dict__, "wall_s": round(time.perf_counter() - t0, 1),
                      "precision": a.precision})
    return history


def classifier_cell(a, work: Path, epoch: int, budget: int, seed: int, data, tokens, classes, tokenizer) -> dict:
    """The classifier from LM epoch `epoch`, `budget` labels (sample seed a.sample_seed), seed `seed`."""
    path = work / "cells" / f"e{epoch}-n{budget}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch

    from ulmfit.data.cls_loader import ClassificationLoader
    from ulmfit.data.subset import stratified_subset
    from ulmfit.models.awd_lstm import LanguageModel
    from ulmfit.recipes.config import FitConfig
    from ulmfit.recipes.model_dir import load_lm
    from ulmfit.recipes.prepare import Labelled
    from ulmfit.recipes.toolbox import LMResult
    from ulmfit.recipes.ulmfit import train_classifier
    from ulmfit.train.checkpoint import load_weights
    from ulmfit.train.metrics import classification_metrics
    from ulmfit.train.tasks import ClassifierTask

    lm, _, vocab = load_lm(work / "lm")
    lm.load_state_dict(load_weights(work / "lm" / "epochs" / f"lm-epoch{epoch}.safetensors"))
    assert isinstance(lm, LanguageModel)
    lm_result = LMResult(lm, lm.cfg, tokenizer, vocab, [])
    ids = {c: i for i, c in enumerate(classes)}
    y = {k: np.array([ids[v] for v in df["label"]], dtype=np.int64) for k, df in data.items()}
    idx = stratified_subset(y["train"], total=budget, seed=a.sample_seed)[0] if budget < len(y["train"]) \
        else np.arange(len(y["train"]))
    train = Labelled([data["train"]["text"][i] for i in idx], y["train"][idx], "train sample")
    valid = Labelled(list(data["valid"]["text"]), y["valid"], "valid")
    cfg = FitConfig(pretrained=str(a.pretrained_path), precision=a.precision).resolved()
    out = work / "clf" / path.stem
    t0, c0 = time.perf_counter(), time.process_time()
    model, valid_metrics = train_classifier(lm_result, train, valid, classes, out, cfg.clf, seed=seed,
                                            precision=a.precision, train_tokens=[tokens["train"][i] for i in idx],
                                            valid_tokens=tokens["valid"], imbalance=cfg.imbalance)
    cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - t0
    test_docs = vocab.encode_many(tokens["test"])
    loader = ClassificationLoader(test_docs, y["test"], bs=128, shuffle=False, max_tokens=cfg.clf.max_doc_tokens)
    with torch.no_grad():
        probs = ClassifierTask(classes).predict(model, loader)
    test = classification_metrics(y["test"], probs.argmax(1), classes)
    cell = {"epoch": epoch, "budget": budget, "seed": seed, "sample_seed": a.sample_seed,
            "valid_macro_f1": valid_metrics["macro_f1"], "valid_accuracy": valid_metrics["accuracy"],
            "test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"],
            "cpu_s": round(cpu_s, 1), "wall_s": round(wall_s, 1)}
    write_json(path, cell)
    shutil.rmtree(out, ignore_errors=True)
    print(f"classifier from LM epoch {epoch}, {budget} labels, seed {seed}: valid macro-F1 "
          f"{cell['valid_macro_f1']:.4f}, test {cell['test_macro_f1']:.4f} ({cpu_s:.0f} CPU s)", flush=True)
    return cell


def picks(history: list[dict], patience: int | None = None) -> dict[str, int]:
    """The LM epoch each stopping criterion keeps: the loop's own `EarlyStopping` replayed on the
    logged epochs (ties: the earliest). `patience`: also stop early as `finetune_lm` would (only
    in the unfrozen stage), i.e. what `lm.patience` would have kept in a run of these epochs."""
    from ulmfit.train.metrics import EarlyStopping

    out = {}
    for metric in ("valid_loss", "accuracy"):
        early = EarlyStopping(metric, patience=patience)
        for r in history:
            early.step(r[metric], r["epoch"])
            if r["stage"] == "all" and early.should_stop:
                break
        out[metric] = early.best_epoch
    out["last"] = history[-1]["epoch"]
    return out


def summarize(a, work: Path, history: list[dict]) -> dict:
    cells = [json.loads(p.read_text()) for p in sorted((work / "cells").glob("*.json"))]
    chosen = picks(history)
    stopped = {f"{k}, patience {a.patience}": v for k, v in picks(history, a.patience).items() if k != "last"}
    out = {"dataset": a.dataset, "precision": a.precision, "lm_history": history, "picks": chosen, "budgets": {},
           "machine": machine_info(), "settings": {k: v for k, v in vars(a).items() if k != "pretrained_path"},
           "command": " ".join(sys.argv)}
    done = json.loads((work / "lm" / "done.json").read_text()) if (work / "lm" / "done.json").exists() else {}
    out["lm_wall_s"], out["lm_cpu_s"] = done.get("wall_s"), round(sum(r.get("cpu_s") or 0 for r in history), 1)
    out["picks_with_early_stopping"] = stopped
    print(f"\n{a.dataset}, {a.precision}: LM epochs (epoch 0 = frozen); picks: " +
          ", ".join(f"{k} -> epoch {v}" for k, v in chosen.items()) + "; with early stopping: " +
          ", ".join(f"{k} -> epoch {v}" for k, v in stopped.items()))
    for budget in sorted({c["budget"] for c in cells}):
        # the mean is over the seeds run at every scored epoch of this budget (a seed run only at the
        # picked epochs is shown in its own column, not mixed into the means)
        here = [c for c in cells if c["budget"] == budget]
        epochs_of = {s: {c["epoch"] for c in here if c["seed"] == s} for s in {c["seed"] for c in here}}
        full = set().union(*epochs_of.values())
        complete = {s for s, e in epochs_of.items() if e == full}
        rows = []
        for r in history:
            every = [c for c in here if c["epoch"] == r["epoch"]]
            mine = [c for c in every if c["seed"] in complete]
            row = {"epoch": r["epoch"], "lm_valid_loss": r["valid_loss"], "lm_ppl": r["perplexity"],
                   "lm_acc": r["accuracy"], "n_seeds": len(mine)}
            for c in every:
                row[f"test_f1_s{c['seed']}"] = c["test_macro_f1"]
            if mine:
                row["test_f1"] = statistics.mean(c["test_macro_f1"] for c in mine)
                row["valid_f1"] = statistics.mean(c["valid_macro_f1"] for c in mine)
                row["clf_cpu_s"] = statistics.mean(c["cpu_s"] for c in mine)
            row["pick"] = ",".join([k for k, v in chosen.items() if v == r["epoch"]]
                                   + [k.replace(", patience ", "/p") for k, v in stopped.items() if v == r["epoch"]])
            rows.append(row)
        scored = [r for r in rows if "test_f1" in r]
        seeds = sorted({c["seed"] for c in cells if c["budget"] == budget})
        # seed noise: per epoch, the spread between classifier seeds (same LM, same labels)
        noise = [max(r[f"test_f1_s{s}"] for s in complete) - min(r[f"test_f1_s{s}"] for s in complete)
                 for r in scored if len(complete) > 1]
        by_epoch = {r["epoch"]: r for r in scored}
        verdict = {k: {"epoch": e, "test_f1": by_epoch[e]["test_f1"], "valid_f1": by_epoch[e]["valid_f1"],
                       "test_f1_by_seed": {s: by_epoch[e][f"test_f1_s{s}"] for s in seeds if f"test_f1_s{s}" in by_epoch[e]}}
                   for k, e in {**chosen, **stopped}.items() if e in by_epoch}
        if scored:
            best_valid = max(scored, key=lambda r: r["valid_f1"])
            verdict["best_classifier_on_valid"] = {"epoch": best_valid["epoch"], "test_f1": best_valid["test_f1"],
                                                   "valid_f1": best_valid["valid_f1"]}
        cols = ["epoch", "lm_valid_loss", "lm_ppl", "lm_acc"] + [f"test_f1_s{s}" for s in seeds] + \
               ["test_f1", "valid_f1", "clf_cpu_s", "pick"]
        print(f"\n{budget} labels (sample seed {a.sample_seed}; classifier seeds {seeds}; means over seeds "
              f"{sorted(complete)}):")
        print(table(rows, cols, {"lm_valid_loss": ".4f", "lm_ppl": ".1f", "lm_acc": ".4f", "test_f1": ".4f",
                                 "valid_f1": ".4f", "clf_cpu_s": ".0f", **{f"test_f1_s{s}": ".4f" for s in seeds}}))
        for k, v in verdict.items():
            print(f"  {k:>24}: epoch {v['epoch']}, test macro-F1 {v['test_f1']:.4f} (valid {v['valid_f1']:.4f}); "
                  "by seed " + ", ".join(f"{s}: {f:.4f}" for s, f in v.get("test_f1_by_seed", {}).items()))
        corr = {}
        for part, sel in (("all", scored), ("from_loss_min", [r for r in scored if r["epoch"] >= chosen["valid_loss"]])):
            if len(sel) >= 3:  # which LM figure tracks the classifier: Pearson r over the scored epochs
                f1 = np.array([r["test_f1"] for r in sel])
                corr[part] = {k: float(np.corrcoef(f1, [r[k] for r in sel])[0, 1]) for k in ("lm_valid_loss", "lm_acc")}
                print(f"  correlation of test macro-F1 with the LM's validation loss {corr[part]['lm_valid_loss']:+.2f}, "
                      f"with its accuracy {corr[part]['lm_acc']:+.2f} (epochs: {part}, {len(sel)})")
        if noise:
            print(f"  seed spread (max-min test macro-F1 over {len(complete)} classifier seeds, per epoch): "
                  f"mean {statistics.mean(noise):.4f}, max {max(noise):.4f}")
        out["budgets"][str(budget)] = {"rows": rows, "verdict": verdict, "seeds": seeds, "correlation": corr,
                                       "mean_over_seeds": sorted(complete),
                                       "seed_spread_mean": statistics.mean(noise) if noise else None,
                                       "seed_spread_max": max(noise) if noise else None}
    return out


def plot(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hist = result["lm_history"]
    ep = [r["epoch"] for r in hist]
    fig = Figure(figsize=(11, 4.2))
    ax1, ax3 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(ep, [r["valid_loss"] for r in hist], "o-", color="tab:red", label="LM validation loss")
    ax1.set_xlabel("LM epoch (0 = frozen)")
    ax1.set_ylabel("validation loss", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot(ep, [r["accuracy"] for r in hist], "s-", color="tab:blue", label="LM next-word accuracy")
    ax2.set_ylabel("next-word accuracy", color="tab:blue")
    for name, e, mk in (("loss-min", result["picks"]["valid_loss"], "v"), ("acc-max", result["picks"]["accuracy"], "^")):
        ax1.axvline(e, ls=":", color="gray")
        ax1.annotate(name, (e, ax1.get_ylim()[1]), ha="center", va="top", fontsize=8)
    ax1.set_title(f"{result['dataset']}: LM fine-tuning from general-en ({result['precision']})")
    for budget, b in result["budgets"].items():
        sc = [r for r in b["rows"] if "test_f1" in r]
        line, = ax3.plot([r["epoch"] for r in sc], [r["test_f1"] for r in sc], "o-", label=f"{budget} labels: test")
        ax3.plot([r["epoch"] for r in sc], [r["valid_f1"] for r in sc], "o--", color=line.get_color(), alpha=0.6,
                 label=f"{budget} labels: validation")
        for s in b["seeds"]:
            pts = [(r["epoch"], r[f"test_f1_s{s}"]) for r in sc if f"test_f1_s{s}" in r]
            ax3.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color=line.get_color(), alpha=0.5)
    for e in set(result["picks"].values()):
        ax3.axvline(e, ls=":", color="gray")
    ax3.set_xlabel("LM epoch the classifier starts from")
    ax3.set_ylabel("classifier macro-F1 (mean of seeds; dots: each seed)")
    ax3.set_title("the same classifier from each LM epoch")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=("tweets", "spam"), default="tweets")
    p.add_argument("--pretrained", default="general-en")
    p.add_argument("--epochs", type=int, default=14, help="unfrozen LM epochs (after the frozen one)")
    p.add_argument("--frozen-epochs", type=int, default=1)
    p.add_argument("--lm-lr", type=float, default=2e-2, help="FitConfig.resolved()'s rate for the small general-en")
    p.add_argument("--max-train-tokens", type=int, default=100_000,
                   help="LM text budget: fewer tokens over-fit in fewer epochs (the point of the experiment)")
    p.add_argument("--budgets", type=int, nargs="+", default=[500])
    p.add_argument("--clf-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--clf-epochs", default="all", help="all | picks (the criteria's epochs) | comma list")
    p.add_argument("--lm-patience", type=int, default=None,
                   help="stop the LM early like the library does (default: never, to see every epoch); the "
                        "schedule is that of --epochs either way, so the epochs run are those of the longer run")
    p.add_argument("--patience", type=int, default=2, help="also report what early stopping with this patience "
                   "(lm.patience's default) would have kept; the run itself never stops early")
    p.add_argument("--sample-seed", type=int, default=0, help="the label sample (benchmarks/accuracy.py's seed)")
    p.add_argument("--seed", type=int, default=0, help="the LM's seed")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "auto"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/bench-lm-stopping")
    p.add_argument("--summary-only", action="store_true")
    a = p.parse_args()
    import torch

    from ulmfit.recipes.model_dir import load_text_pipeline, resolve_pretrained

    torch.set_num_threads(a.threads)
    a.pretrained_path = resolve_pretrained(a.pretrained)
    work = Path(a.work) / f"{a.dataset}-{a.precision}"
    if not a.summary_only:
        data = load_data(a.dataset)
        classes = sorted(set(data["train"]["label"]))
        tokenizer = load_text_pipeline(a.pretrained_path)[0]
        t0 = time.perf_counter()
        tokens = {k: tokenizer.tokenize_many(list(df["text"]), n_workers=1) for k, df in data.items()}
        print(f"tokenized {sum(map(len, tokens.values())):,} texts in {time.perf_counter() - t0:.0f}s", flush=True)
        history = finetune(a, work, tokens, tokenizer, a.pretrained_path)
        chosen = set(picks(history).values()) | set(picks(history, a.patience).values())
        epochs = ([r["epoch"] for r in history] if a.clf_epochs == "all" else sorted(chosen)
                  if a.clf_epochs == "picks" else [int(e) for e in a.clf_epochs.split(",")])
        # seed-major order: one seed over all epochs first, so a stopped run has a complete curve
        for seed in a.clf_seeds:
            for budget in a.budgets:
                for e in epochs:
                    classifier_cell(a, work, e, budget, seed, data, tokens, classes, tokenizer)
    history = json.loads((work / "lm" / "done.json").read_text())["history"]
    result = summarize(a, work, history)
    name = f"lm_stopping_{a.dataset}_{a.precision}"
    write_json(RESULTS / f"{name}.json", result)
    plot(result, RESULTS / f"{name}.png")
    print(f"\nwrote {RESULTS / (name + '.json')} and {name}.png")


if __name__ == "__main__":
    main()
