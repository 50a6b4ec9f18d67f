"""The arithmetic of training and evaluation steps: fp32, or bf16 autocast, or `auto`.

`auto` (the default) is resolved once, at the start of a run, and the resolved value is what the
run's config.json and log record (so a resumed run keeps it, even on another machine):

- a model on a CUDA device: bf16 autocast where the GPU supports bf16, else fp32;
- on the CPU: bf16 autocast where the CPU computes bf16 natively (AMX-BF16 tiles or AVX512-BF16
  dot products; detected at run time through torch, or /proc/cpuinfo's flags), else fp32.
  Without native support, bf16 is emulated and slower than fp32.

bf16 keeps fp32's exponent range, so no loss scaling is needed; the losses and the optimizer state
stay in fp32 (autocast only lowers matrix products and LSTM cells).
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path

from ulmfit.errors import UlmfitError

PRECISIONS = ("auto", "fp32", "bf16")  # the config fields' choices (recipes/fields.py); this module imports torch lazily
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names, strongest first


@lru_cache(maxsize=1)
def native_bf16_cpu() -> str | None:
    """The CPU feature that computes bf16 natively ("amx_bf16", "avx512_bf16"), or None."""
    import torch

    caps = {}
    try:
        caps = torch.cpu.get_capabilities()  # recent torch: {"amx_bf16": False, "avx512_bf16": True, ...}
    except (AttributeError, RuntimeError):
        pass
    flags: set[str] = {k for k, v in caps.items() if v is True}
    if not caps:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        except OSError:
            pass
    return next((f for f in _NATIVE_BF16_FLAGS if f in flags), None)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UlmfitError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """"fp32" or "bf16": `precision` itself, or what `auto` means on `device` ("cpu", "cuda")."""
    if check_precision(precision) != "auto":
        return precision
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16_cpu() else "fp32"


def describe_precision(precision: str, device: str = "cpu", lstm: bool = False) -> str:
    """One phrase for the log, e.g. "bf16 (auto: this CPU has avx512_bf16)"; with `lstm`, what a
    training run of an LSTM gets (`training_precision`: auto falls back to fp32 where it cannot)."""
    resolved = training_precision(precision, device, lstm) if lstm else resolve_precision(precision, device)
    if precision != "auto":
        return resolved
    if resolved != resolve_precision(precision, device):
        why = f"this {'GPU' if device == 'cuda' else 'CPU'} cannot train the LSTM in bf16"
    elif device == "cuda":
        why = "the GPU supports bf16" if resolved == "bf16" else "the GPU lacks bf16"
    else:
        flag = native_bf16_cpu()
        why = f"this CPU has {flag}" if flag else "this CPU has no native bf16 (amx_bf16 / avx512_bf16)"
    return f"{resolved} (auto: {why})"


@lru_cache(maxsize=None)
def bf16_lstm_ok(device: str = "cpu") -> bool:
    """Whether this machine can train an LSTM under bf16 autocast on `device` ("cpu", "cuda"). oneDNN
    has no bf16 LSTM kernel on a CPU without AVX-512 (seen on an AVX2-only AMD EPYC: "could not create
    a primitive descriptor for the LSTM forward propagation primitive"), and PyTorch's CUDA LSTM has
    had bf16 gaps outside cuDNN (pytorch/pytorch#88136, #116925), so one tiny forward and backward pass
    asks, once per process and device."""
    import torch

    try:
        lstm = torch.nn.LSTM(4, 4, batch_first=True).to(device)
        with torch.autocast(device, dtype=torch.bfloat16):
            out = lstm(torch.zeros(1, 2, 4, device=device))[0]
        out.float().sum().backward()
        return True
    except RuntimeError:
        return False


def training_precision(precision: str, device: str = "cpu", lstm: bool = True) -> str:
    """`resolve_precision` for a training run, called once at its start (the config's resolution, the
    loop's phase start). For a model with an LSTM (`lstm`) on a device that cannot train it in bf16,
    `auto` is fp32 and an explicit bf16 is refused in one line before any work. A model without one
    (the transformer backbone) trains in bf16 on any CPU, slowly where it is not native. Prediction's
    bf16 (bf16 weights, no autocast) runs on such a CPU and does not come here."""
    resolved = resolve_precision(precision, device)
    if lstm and resolved == "bf16" and not bf16_lstm_ok(device):
        if precision == "auto":
            return "fp32"
        where = "this CPU" if device == "cpu" else "this GPU's PyTorch"
        why = " (no bf16 LSTM kernel without AVX-512)" if device == "cpu" else ""
        raise UlmfitError(f"precision=bf16: {where} cannot train the LSTM in bf16{why}; use precision=auto "
                          "(fp32 here) or fp32")
    return resolved


def autocast(precision: str, device_type: str = "cpu"):
    """The context of a forward pass: nothing for fp32, bf16 autocast on `device_type` for bf16
    (and for `auto` where it resolves to bf16)."""
    if resolve_precision(precision, device_type) == "bf16":
        import torch

        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()
