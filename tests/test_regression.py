"""A fixed-seed tiny `fit` gives the same model as before the trainer was unified (issue 14).

tests/fixtures/regression.json holds, for ULMFiT forward, ULMFiT both and SiATL, the validation
metrics, every epoch's logged losses and a SHA-256 of every saved weight tensor, recorded on main
before `train/loop.py` took over SiATL's loop and the recipes moved behind the registry. The
comparison is exact: the same operations in the same order give the same bits on one kind of CPU
kernels. The figures are kept per kind (`cpu_kind()`: `torch.backends.cpu.get_cpu_capability()`, with
"+AMX" where the CPU has AMX (`native_bf16_cpu()` is "amx_bf16"), whose machines take other fp32 kernel paths): "AVX512" holds the
reference figures (recorded on AVX-512 machines without AMX, e.g. the AMD EPYC); "AVX2" was recorded by the
eighth session's code on an AVX2-only AMD EPYC and "AVX512+AMX" by the twenty-fifth session's on an Intel
Xeon with AMX, where the same code gives other bits (so they guard later changes there, not the refactor).
A kind with no figures is skipped with the command that records them.
Regenerate (only for an intended change of results): `ULMFIT_REGEN=1 pytest tests/test_regression.py`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import make_rows, tiny_fit_config

from ulmfit.train.checkpoint import load_weights

FIXTURE = Path(__file__).parent / "fixtures" / "regression.json"
RUNS = ("ulmfit_fwd", "ulmfit_both", "siatl")


def _config(run: str):
    cfg = tiny_fit_config()
    cfg.precision = "fp32"  # pinned: "auto" is bf16 on CPUs with native bf16 and fp32 elsewhere
    cfg.lm = replace(cfg.lm, epochs=1)
    cfg.clf = replace(cfg.clf, epochs=(1, 1, 1, 2), lrs=(3e-2, 3e-2, 3e-2, 2e-2))
    if run == "ulmfit_both":
        cfg.direction, cfg.pretrained_bwd = "both", None
    if run == "siatl":
        cfg.recipe = "siatl"
        # every field that a from-scratch run resolves is set outright, so the figures do not depend on it
        cfg.siatl = replace(cfg.siatl, task_hidden=16, bs=16, epochs=3, max_doc_tokens=32, min_steps_per_epoch=0,
                            unfreeze_lstm_epoch=2, unfreeze_embedding_epoch=3, patience=None, gamma_epochs=3,
                            pretrained_optimizer="adam", pretrained_lr=1e-2, embedding_lr=1e-2, new_lr=1e-2)
    return cfg


def _tensor_digest(path: Path) -> dict:
    weights = load_weights(path)
    h = hashlib.sha256()
    total = 0.0
    for k in sorted(weights):
        t = weights[k].contiguous()
        h.update(k.encode())
        h.update(t.numpy().tobytes())
        total += float(t.double().sum())
    return {"sha256": h.hexdigest(), "sum": total}


def _summary(out: Path) -> dict:
    metrics = json.loads((out / "valid_metrics.json").read_text())
    history = [json.loads(l) for f in sorted(out.rglob("history.jsonl")) for l in f.read_text().splitlines()]
    keep = ("phase", "stage", "epoch", "train_loss", "valid_loss", "macro_f1", "accuracy", "best")
    return {"metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1")},
            "history": [{k: r[k] for k in keep if k in r} for r in history],
            "weights": {str(p.relative_to(out)): _tensor_digest(p) for p in sorted(out.rglob("*.safetensors"))}}


def cpu_kind() -> str:
    """The kind of CPU kernels the stored figures are kept under (see the module's docstring)."""
    from ulmfit.train.precision import native_bf16_cpu

    return torch.backends.cpu.get_cpu_capability() + ("+AMX" if native_bf16_cpu() == "amx_bf16" else "")


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_fixed_seed_fit_is_unchanged(run, tmp_path, monkeypatch):
    from ulmfit.recipes.fit import fit

    monkeypatch.setenv("ULMFIT_DEVICE", "cpu")  # the figures are a CPU's bits; a GPU trains to others

    train, valid, unl = tmp_path / "train.csv", tmp_path / "valid.csv", tmp_path / "more.txt"
    make_rows(90, 0).to_csv(train, index=False)
    make_rows(30, 1).to_csv(valid, index=False)
    unl.write_text("\n".join(make_rows(30, 5).text) + "\n")
    torch.manual_seed(123)  # fit seeds itself: this must not matter
    fit(train, valid, out=tmp_path / "m", unlabeled=[unl], config=_config(run))
    got = _summary(tmp_path / "m")
    stored = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
    kind = cpu_kind()
    if os.environ.get("ULMFIT_REGEN"):
        stored.setdefault(kind, {})[run] = got
        FIXTURE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    if kind not in stored:
        pytest.skip(f"no stored figures for {kind} CPUs; record them with ULMFIT_REGEN=1 on the reference code")
    assert run in stored[kind], f"no stored figures for {run} on {kind}; run once with ULMFIT_REGEN=1"
    assert got == stored[kind][run]
