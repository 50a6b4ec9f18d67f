"""Data-parallel training over processes started by `torchrun`: the hooks the one loop calls.

`torchrun --nproc_per_node N -m ulmfit pretrain|finetune-lm|fit ...` starts N copies of the command
with RANK, WORLD_SIZE and LOCAL_RANK set. Every copy builds the same model from the same seed and
runs the same `train/loop.py: run_phase`; the loop calls the hooks below, which are all no-ops in
a single process, so one run and an N-process run share every line of the training loop.

What N processes change (and what they do not):
- Data: each rank reads its share of every *global* batch (`shard_loaders`). A language model's
  batch of `bs` rows is cut by rows: rank r owns rows [r*bs/N, (r+1)*bs/N) of the very stream
  layout a one-process run with batch `bs` uses, so each rank reads contiguous token streams and
  carries its own hidden state (never a global permutation of rows or windows: fastai #1933). A
  classifier batch (documents sorted by length) is dealt out row by row, so shares are disjoint and
  of near-equal length. The number of steps, the learning-rate schedule and the global batch are
  those of the one-process run.
- Gradients: every rank back-propagates its share of the global batch's loss, `loss * w_r / W`
  (w_r: the weight of this rank's rows in the global mean: tokens for a language model, documents,
  or the sum of their class weights, for a classifier), then the gradients are summed across ranks
  with one all-reduce. The result is the gradient of the one-process loss, also when shares are
  unequal. We do this by hand instead of wrapping the model in `DistributedDataParallel`: gradual
  unfreezing changes `requires_grad` between stages (DDP fixes the set of trained parameters when it
  is built) and frozen or unused parameters would need `find_unused_parameters` (fastai #2148);
  here a parameter without a gradient on every rank simply stays without one.
- BatchNorm (the classifier head): `torch.nn.SyncBatchNorm` runs only on GPUs, so BatchNorm layers
  are switched to `RankSyncBatchNorm`, which all-reduces the batch sums (autograd-aware), giving the
  statistics of the whole global batch on CPUs (gloo) too.
- Dropout: every rank starts each epoch from the same seed, so per-batch masks (DropConnect on the
  LSTM weights, embedding dropout) are the same on all ranks, as in one process; per-row masks
  (locked dropout) repeat across ranks. With dropout off a run equals the one-process run to float
  rounding (tests/test_distributed.py).
- Metrics: the training loss is the global batch's; a language model's validation set is sharded
  by rows and its loss and accuracy are token-weighted means across ranks (perplexity recomputed);
  a classifier's validation set is small and macro-F1 needs every prediction, so each rank scores
  all of it (identical models, identical figures).
- Files: only rank 0 writes (the atomic writer and the log are silent on other ranks) and logs;
  `barrier()` / `main_first()` order reads of what rank 0 wrote. Checkpoints are rank 0's after
  every epoch (and every `checkpoint_every` steps), with the carried hidden state of all ranks
  gathered into the one-process layout, so `--resume` works after any rank died (every rank loads
  them) and even with another number of processes of the same global batch.
- Backend: gloo when training on the CPU; on GPUs (train/device.py: one per process, cuda:LOCAL_RANK)
  "cpu:gloo,cuda:nccl", so the gradients and the carried state go through NCCL and the CPU-side
  figures through gloo.
"""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from ulmfit.errors import UlmfitError
from ulmfit.ranks import is_main, rank, world_size  # noqa: F401 (re-export: one place, torch-free)
from ulmfit.train.device import map_tensors, training_device

TIMEOUT_MINUTES = 180  # a collective may wait this long (rank 0 numericalises a large corpus alone)


def setup() -> bool:
    """Join the process group torchrun describes (idempotent). False when running alone."""
    if world_size() == 1:
        return False
    if not dist.is_available():
        raise UlmfitError("this PyTorch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        device = training_device()  # cuda:LOCAL_RANK, or the CPU (also with fewer GPUs than processes)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        minutes = int(os.environ.get("ULMFIT_DIST_TIMEOUT_MINUTES", TIMEOUT_MINUTES))
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes))
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op alone): what rank 0 wrote before it is there for all to read."""
    if setup():
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writes data files); the other ranks run it after rank 0 is
    done, when what it wrote is on disk for them to load."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


# ----------------------------------------------------------------------------- BatchNorm

class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the gradients (each rank's loss
    depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        return _all_reduce(t.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _all_reduce(grad.clone())


class RankSyncBatchNorm(nn.BatchNorm1d):
    """BatchNorm whose training statistics are those of the global batch (all ranks), on any device.

    Same parameters and buffers as `nn.BatchNorm1d` (the class of an existing layer is switched in
    place, so optimizers and state dicts are unaffected). Eval mode, or a single process: plain
    BatchNorm. Input [B, C] or [B, C, L]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        n_local = xf.new_tensor([xf.numel() / xf.shape[1]])
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), n_local]))
        c = x.shape[1]
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module) -> None:
    """Switch every BatchNorm layer of `model` to `RankSyncBatchNorm`, in place."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, RankSyncBatchNorm):
            m.__class__ = RankSyncBatchNorm


# ----------------------------------------------------------------------------- the loop's hooks

def loss_weight(task, batch) -> float:
    """This rank's weight in the global batch's mean loss. A task may define `loss_weight(batch)`;
    otherwise: an LM batch (x, y) weighs its tokens; a classifier batch its documents, or the sum of
    their class weights when the task weights classes (`ClassLoss.denominator`)."""
    if hasattr(task, "loss_weight"):
        return float(task.loss_weight(batch))
    if isinstance(batch, (tuple, list)):
        return float(batch[0].numel())
    class_loss = getattr(task, "class_loss", None)
    if class_loss is not None and batch.labels is not None:
        return class_loss.denominator(batch.labels)
    return float(len(batch.lengths))


class PhaseSync:
    """What one phase of `run_phase` needs to run on N ranks; every method is a no-op alone.

    `train_loader` / `valid_loader`: this rank's shares. `backward(loss, task, batch)`: the global
    gradient and loss. `reduce_metrics`, `total`: figures of the whole run. `gather_task_state` /
    `local_task_state`: the carried hidden state in the one-process layout, for checkpoints."""

    def __init__(self, model: nn.Module, train_loader, valid_loader):
        self.model, self.world = model, world_size()
        self.rank = rank()
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.valid_sharded = False
        if self.world == 1:
            return
        setup()
        self.train_loader = _shard(train_loader, self.rank, self.world, training=True)
        if hasattr(valid_loader, "row_len") and valid_loader.bs >= self.world:
            # A language model's validation loss and accuracy are means over tokens: shard by rows.
            self.valid_loader = _shard(valid_loader, self.rank, self.world, training=False)
            self.valid_sharded = True
        sync_batchnorm(model)
        with torch.no_grad():  # the same starting point everywhere (all ranks seed alike; make sure)
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)

    def backward(self, loss: torch.Tensor, task, batch) -> float:
        """`loss.backward()`; across ranks the gradients become those of the global batch's loss,
        which is returned as a float."""
        if self.world == 1:
            loss.backward()
            return loss.item()
        w = loss_weight(task, batch)
        total_w = _all_reduce(torch.tensor([w], dtype=torch.float64)).item()
        share = w / total_w
        (loss * share).backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        flat = [p.grad.reshape(-1).float() if p.grad is not None else p.new_zeros(p.numel(), dtype=torch.float32)
                for p in params]
        flags = torch.tensor([p.grad is not None for p in params] + [0], dtype=torch.float32)
        flags[-1] = loss.detach().float().item() * share
        device = params[0].device if params else torch.device("cpu")
        buf = _all_reduce(torch.cat(flat + [flags.to(device)]))
        offset = 0
        for p in params:
            n = p.numel()
            g = buf[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
            p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
        has_grad = buf[offset:offset + len(params)]
        for p, h in zip(params, has_grad.tolist()):
            if h == 0:  # no rank computed a gradient (frozen this stage, or unused): leave none
                p.grad = None
        return float(buf[-1])

    def total(self, x: float) -> float:
        """Sum of `x` over ranks (e.g. tokens read this epoch)."""
        if self.world == 1:
            return x
        return _all_reduce(torch.tensor([float(x)], dtype=torch.float64)).item()

    def reduce_metrics(self, metrics: dict) -> dict:
        """Validation figures of the whole validation set: a sharded LM validation set's metrics
        are token-weighted means over ranks (perplexity recomputed from the mean loss)."""
        if not self.valid_sharded:
            return metrics
        from ulmfit.train.metrics import perplexity

        keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        w = float(self.valid_loader.n_rows)
        vec = _all_reduce(torch.tensor([w] + [float(metrics[k]) * w for k in keys], dtype=torch.float64))
        out = dict(metrics)
        out.update({k: (vec[i + 1] / vec[0]).item() for i, k in enumerate(keys)})
        if "perplexity" in out and "valid_loss" in out:
            out["perplexity"] = perplexity(out["valid_loss"])
        return out

    def gather_task_state(self, state):
        """A task's carried state (LM: per layer (h, c), each [1, rows, H]) with every rank's rows,
        in the one-process layout. Collective: every rank calls it; only rank 0 saves it."""
        if self.world == 1 or state is None:
            return state
        return map_tensors(state, self._gather_rows)

    def local_task_state(self, state):
        """This rank's rows of a state saved by `gather_task_state`."""
        if self.world == 1 or state is None:
            return state
        start, stop = self.train_loader.row0, self.train_loader.row0 + self.train_loader.n_rows
        return map_tensors(state, lambda t: t[:, start:stop].clone() if t.dim() >= 2 else t)

    def _gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() < 2:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=1)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _shard(loader, r: int, world: int, training: bool):
    if not hasattr(loader, "shard"):
        raise UlmfitError(f"{type(loader).__name__} cannot be split across {world} processes; "
                          f"run this command without torchrun")
    return loader.shard(r, world, training=training)


__all__ = ["world_size", "rank", "is_main", "setup", "shutdown", "barrier", "main_first", "PhaseSync",
           "RankSyncBatchNorm", "sync_batchnorm", "loss_weight"]
