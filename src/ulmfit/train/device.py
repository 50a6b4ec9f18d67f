"""Where training runs: the CPU, or a CUDA GPU when there is one.

The setting is the process's, not the model's: the same run trains the same model on either (up to
floating-point order), and a run interrupted on a GPU resumes on a CPU, and back. It is read from
the environment variable ULMFIT_DEVICE (`auto` when unset), which `ulmfit ... --device` sets, so a
"both" run's direction processes (train/processes.py) and torchrun's ranks inherit it:

- auto (default): CUDA when torch sees a GPU, else the CPU;
- cpu: the CPU even where a GPU is present;
- cuda: the GPU, refused in one line where torch sees none. Under torchrun each rank uses
  cuda:LOCAL_RANK, one GPU per process (NCCL allows no two ranks on one GPU): with fewer GPUs than
  processes on the machine, `auto` is the CPU (gloo) and `cuda` is refused in one line.

Only `run_phase` (train/loop.py) places anything: the model goes to the device for the phase and
comes back to the CPU, best weights loaded, when the phase ends, so everything outside the loop
(saving, calibration, prediction, reports) is the CPU code it always was. Batches move one at a
time as the loop reads them (`OnDevice`); a batch object moves through its own `to(device)` (its
host-side fields, such as the row index that addresses numpy arrays, stay on the CPU).
"""
from __future__ import annotations

import os

from ulmfit.errors import UlmfitError

DEVICES = ("auto", "cpu", "cuda")
ENV = "ULMFIT_DEVICE"


def use(setting: str) -> None:
    """Make `setting` this process's (and its children's) training device."""
    os.environ[ENV] = check(setting)


def check(setting: str) -> str:
    if setting not in DEVICES:
        raise UlmfitError(f"{ENV}={setting!r}: the training device must be one of {', '.join(DEVICES)}; "
                          f"use one of them (or unset {ENV} for auto)")
    return setting


def setting() -> str:
    """This process's setting, checked (without importing torch): auto, cpu or cuda."""
    return check(os.environ.get(ENV, "auto").strip() or "auto")


def training_device() -> "torch.device":
    """The device a training phase runs on, from ULMFIT_DEVICE (see the module's docstring). Under
    torchrun each process of a machine needs a GPU of its own (NCCL refuses two ranks on one GPU):
    with fewer GPUs than processes `auto` is the CPU (gloo), and `cuda` is refused."""
    import torch  # here, not at the top: the CLI reads this module without training

    chosen = setting()
    if chosen == "cpu":
        return torch.device("cpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine
    if chosen == "auto" and gpus < local:
        return torch.device("cpu")
    if gpus == 0:
        raise UlmfitError("--device cuda: torch sees no CUDA GPU here (a CPU-only torch, or no driver); "
                          "use --device auto or cpu")
    if gpus < local:
        raise UlmfitError(f"--device cuda: torchrun runs {local} processes on this machine and torch sees {gpus} "
                          f"GPU(s), one per process; pass --nproc_per_node {gpus}, or --device cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def describe() -> str:
    """One phrase for the log, e.g. "cuda:0 (NVIDIA H200)" or "cpu"."""
    d = training_device()
    if d.type != "cuda":
        return "cpu"
    import torch

    return f"{d} ({torch.cuda.get_device_name(d)})"


def map_tensors(obj, fn):
    """`obj` with `fn` applied to every tensor in it: a tensor, or dicts, lists and tuples of them
    (anything else as it is). Also how distributed.py gathers and splits a task's carried state."""
    import torch

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def to_device(obj, device):
    """`obj` with its tensors on `device`: a batch with its own `to(device)` (data/cls_loader.py
    `ClsBatch`), or what `map_tensors` walks (an LM batch (x, y), a task's carried state)."""
    import torch

    if callable(getattr(obj, "to", None)) and not isinstance(obj, torch.Tensor):
        return obj.to(device)
    return map_tensors(obj, lambda t: t.to(device, non_blocking=True))


class OnDevice:
    """A loader whose batches arrive on `device`; every other attribute is the wrapped loader's
    (len, set_epoch, docs, labels, ...). On the CPU the loop keeps the loader itself."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, device

    def __iter__(self):
        for batch in self.loader:
            yield to_device(batch, self.device)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        if name == "loader":  # not set yet (a copy being built): no lookup through itself
            raise AttributeError(name)
        return getattr(self.loader, name)


def on_device(loader, device: torch.device):
    return loader if loader is None or device.type == "cpu" else OnDevice(loader, device)


def rng_state(device: torch.device) -> torch.Tensor | None:
    """The GPU's random state (its dropout masks), for a checkpoint inside an epoch; None on the CPU."""
    if device.type != "cuda":
        return None
    import torch

    return torch.cuda.get_rng_state(device)


def set_rng_state(state: torch.Tensor | None, device: torch.device) -> None:
    if state is not None and device.type == "cuda":
        import torch

        torch.cuda.set_rng_state(state.cpu(), device)
