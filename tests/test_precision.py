"""precision: auto resolves by what the hardware computes natively; the resolved value is recorded."""
from __future__ import annotations

import pytest
import torch

from ulmfit.errors import UlmfitError
from ulmfit.train import precision as P


@pytest.fixture
def cpu_flag(monkeypatch):
    """Pretend the CPU has (or lacks) a native-bf16 feature; training on the CPU (train/device.py), also
    where a GPU is present."""
    monkeypatch.setenv("ULMFIT_DEVICE", "cpu")

    def set_flag(flag):
        monkeypatch.setattr(P, "native_bf16_cpu", lambda: flag)
        if flag:  # such a CPU trains the LSTM in bf16
            monkeypatch.setattr(P, "bf16_lstm_ok", lambda device="cpu": True)
    return set_flag


def test_auto_follows_native_bf16(cpu_flag):
    cpu_flag("avx512_bf16")
    assert P.resolve_precision("auto") == "bf16"
    assert P.describe_precision("auto") == "bf16 (auto: this CPU has avx512_bf16)"
    cpu_flag(None)
    assert P.resolve_precision("auto") == "fp32"
    assert P.describe_precision("auto").startswith("fp32 (auto: this CPU has no native bf16")
    assert P.resolve_precision("bf16") == "bf16" and P.resolve_precision("fp32") == "fp32"  # explicit wins


def test_cuda_auto_needs_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_precision("auto", "cuda") == "fp32"


def test_detection_reads_the_real_machine():
    P.native_bf16_cpu.cache_clear()
    flag = P.native_bf16_cpu()
    assert flag in (None, "amx_bf16", "avx512_bf16")
    cpuinfo = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else None
    if cpuinfo is not None:  # torch's view and the kernel's flags agree
        assert (flag is not None) == any(f in cpuinfo.split() for f in ("amx_bf16", "avx512_bf16"))


def test_autocast_lowers_matmuls_only_for_bf16(cpu_flag):
    a = torch.randn(4, 4)
    with P.autocast("bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with P.autocast("fp32"):
        assert (a @ a).dtype == torch.float32
    cpu_flag(None)
    with P.autocast("auto"):
        assert (a @ a).dtype == torch.float32


def test_bad_value_is_one_clear_error():
    with pytest.raises(UlmfitError, match="precision must be one of auto, fp32, bf16, not 'fp16'"):
        P.resolve_precision("fp16")


def test_fit_config_records_the_resolved_value(cpu_flag):
    from ulmfit.recipes.config import FitConfig

    cfg = FitConfig(pretrained=None)
    assert cfg.precision == "auto"
    cpu_flag("amx_bf16")
    assert cfg.resolved().precision == "bf16"
    cpu_flag(None)
    assert cfg.resolved().precision == "fp32"
    with pytest.raises(UlmfitError, match="precision"):
        FitConfig(pretrained=None, precision="half").resolved()


def test_lm_trains_under_each_precision(cpu_flag, tmp_path):
    """A few LM steps through the shared loop in fp32 and in bf16: finite, falling loss; the state
    carried between batches stays in the autocast dtype."""
    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
    from ulmfit.text.token_docs import TokenDocs
    from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
    from ulmfit.train.optim import make_optimizer, param_groups
    from ulmfit.train.tasks import LMTask
    import numpy as np

    rng = np.random.default_rng(0)
    docs = TokenDocs.from_arrays([np.tile(rng.integers(4, 40, 50), 8)])
    if not P.bf16_lstm_ok():  # an AVX2-only CPU: an explicit bf16 is refused in one line, before any step
        model = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=40))
        groups = model.layer_groups()
        with pytest.raises(UlmfitError, match="precision=bf16: this CPU cannot train the LSTM in bf16"):
            run_phase(model, LMTask(), make_optimizer(param_groups(groups, 1e-2), "adamw"), groups,
                      [Stage("all", 1, 1e-2)], LMLoader(docs, bs=4, bptt=10), LMLoader(docs, bs=4, bptt=10),
                      PhaseFiles(tmp_path / "refused", "lm"), LoopConfig(precision="bf16", progress=False))
        assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").rglob("*.jsonl"))
    for prec in ("fp32", "bf16") if P.bf16_lstm_ok() else ("fp32",):
        torch.manual_seed(0)
        model = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=40))
        groups = model.layer_groups()
        opt = make_optimizer(param_groups(groups, 1e-2), "adamw")
        res = run_phase(model, LMTask(), opt, groups, [Stage("all", 3, 1e-2)], LMLoader(docs, bs=4, bptt=10),
                        LMLoader(docs, bs=4, bptt=10), PhaseFiles(tmp_path / prec, "lm"),
                        LoopConfig(precision=prec, patience=None, progress=False))
        losses = [r["train_loss"] for r in res.history]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0], (prec, losses)


def test_explicit_bf16_is_refused_only_for_a_model_with_an_lstm_on_a_cpu_without_its_kernel(monkeypatch, tmp_path):
    """On a CPU without oneDNN's bf16 LSTM kernel (AVX2), an explicit bf16 is refused in one line for
    the AWD-LSTM recipes, at the config and at the loop; the transformer backbone has no LSTM and
    trains in bf16 there (slowly: not native)."""
    import torch
    from torch import nn

    from ulmfit.recipes.config import FitConfig
    from ulmfit.train.loop import LoopConfig, run_phase

    monkeypatch.setenv("ULMFIT_DEVICE", "cpu")  # a CPU's kernels, also where a GPU is present
    monkeypatch.setattr(P, "native_bf16_cpu", lambda: None)
    monkeypatch.setattr(P, "bf16_lstm_ok", lambda device="cpu": False)
    with pytest.raises(UlmfitError, match="cannot train the LSTM in bf16"):
        P.training_precision("bf16")
    assert P.training_precision("bf16", lstm=False) == "bf16"
    assert P.training_precision("auto") == "fp32"
    with pytest.raises(UlmfitError, match="cannot train the LSTM in bf16"):
        FitConfig(pretrained=None, precision="bf16", recipe="ulmfit").resolved()
    assert FitConfig(pretrained=None, precision="bf16", recipe="transformer").resolved().precision == "bf16"

    from test_loop import STAGES, Batches, Net, RegressionTask
    from ulmfit.train.loop import PhaseFiles
    from ulmfit.train.optim import make_optimizer, param_groups

    class WithLstm(Net):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 4, batch_first=True)

    def fit(model, folder):
        opt = make_optimizer(param_groups(model.layer_groups(), 1e-2), "adamw")
        return run_phase(model, RegressionTask(), opt, model.layer_groups(), STAGES[:1], Batches(), Batches(seed=1),
                         PhaseFiles(folder, "toy"), LoopConfig(precision="bf16", progress=False))

    with pytest.raises(UlmfitError, match="cannot train the LSTM in bf16"):
        fit(WithLstm(), tmp_path / "lstm")
    assert fit(Net(), tmp_path / "net").history  # no LSTM: trains in bf16


def test_a_gpu_that_cannot_train_the_lstm_in_bf16_trains_it_in_fp32_on_auto(monkeypatch):
    """CUDA's `auto` is bf16 where the GPU supports it, but PyTorch's CUDA LSTM has had bf16 gaps
    (outside cuDNN): where the probe fails, `auto` is fp32 for the AWD-LSTM and an explicit bf16 is one
    line; the transformer (no LSTM) keeps bf16."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(P, "bf16_lstm_ok", lambda device="cpu": device != "cuda")
    assert P.training_precision("auto", "cuda") == "fp32"
    assert P.describe_precision("auto", "cuda", lstm=True) == "fp32 (auto: this GPU cannot train the LSTM in bf16)"
    assert P.training_precision("auto", "cuda", lstm=False) == "bf16"
    with pytest.raises(UlmfitError, match="precision=bf16: this GPU's PyTorch cannot train the LSTM in bf16; use"):
        P.training_precision("bf16", "cuda")
    monkeypatch.setattr(P, "bf16_lstm_ok", lambda device="cpu": True)
    assert P.training_precision("auto", "cuda") == "bf16"
