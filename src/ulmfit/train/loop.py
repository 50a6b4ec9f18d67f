"""The training loop: every kind of training (LM pretraining and fine-tuning, the ULMFiT classifier,
SiATL, distillation) runs through `run_phase`, once.

A *phase* is a list of `Stage`s sharing one model, one `Stepper` (how weights are updated) and one
early-stopping monitor. ULMFiT's gradual unfreezing (§3.3) is four stages: `freeze_to(-1)`, `-2`,
`-3`, then all. After every epoch the loop writes one JSON line to the log, keeps the best weights
by the monitored metric and checkpoints everything needed to resume (model, optimizer state,
early-stopping counters, position, the task's carried state); long epochs also inside the epoch
(`LoopConfig.checkpoint_every` steps, `checkpoint_s` seconds). Randomness is re-seeded from
(seed, stage, epoch) at the start of every epoch, so a resumed run reproduces an uninterrupted one.

What differs between kinds of training lives in two small objects (minGPT's trainer shape: one
model-agnostic loop, extended from outside):

* the **task** (train/tasks.py): `loss(model, batch) -> Tensor` and `evaluate(model, loader) ->
  dict`; optionally `start_epoch(epoch)`, `epoch_record() -> dict` (extra fields of the epoch's log
  line), `state_dict()` / `load_state_dict()` (state carried across batches, for mid-epoch resume);
* the **stepper**: `GroupStepper` (one optimizer over layer groups: freezing, discriminative rates,
  the schedule; what ULMFiT uses) or any object with the same methods (SiATL's two optimizers with
  sequential unfreezing: train/siatl_optim.py `SiatlStepper`). Passing a torch optimizer and its
  layer groups builds a `GroupStepper`.

`callbacks`: objects with any of `on_resume(result)`, `on_epoch_end(record)`,
`on_stop(record)`, called after the epoch's checkpoint is written (a recipe's progress messages).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ulmfit.errors import UlmfitError
from ulmfit.fileio import append_jsonl, remove
from ulmfit.train import distributed
from ulmfit.train.checkpoint import load_state, load_weights, rewrite_phase_log, save_state, save_weights
from ulmfit.train.device import on_device, rng_state, set_rng_state, to_device, training_device
from ulmfit.train.freeze import freeze_to
from ulmfit.train.metrics import EarlyStopping
from ulmfit.train.optim import discriminative_lrs, set_lr_mom
from ulmfit.train.precision import autocast, training_precision
from ulmfit.train import progress
from ulmfit.train.progress import Heartbeat
from ulmfit.train.schedules import Schedule


@dataclass
class Stage:
    name: str
    epochs: int
    lr: float  # the top layer group's rate; lower groups get lr / factor**k
    freeze_to: int = 0  # fastai semantics: -1 trains the last group only, 0 trains all
    schedule: str = "one_cycle"  # one_cycle | stlr | constant
    can_stop_early: bool = False


@dataclass
class LoopConfig:
    monitor: str = "valid_loss"  # defined for every task; the recipes pass their configured metric
    patience: int | None = 3  # a bare run_phase call's value; every recipe passes its section's `patience`
    clip: float | None = 0.25  # gradient-norm clipping as in awd-lstm-lm
    lr_factor: float = 2.6  # ULMFiT §3.2: each lower layer group gets lr / 2.6
    pct_start: float = 0.25  # share of a one-cycle stage spent warming up: fastai's fit_one_cycle default
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); auto: bf16 where computed natively (train/precision.py)
    seed: int = 0  # the recipes pass the run's seed
    progress: bool | None = None  # None: a bar only when stderr is a terminal (never in a parallel run's child: train/progress.py)
    heartbeat_s: float | None = 30.0  # without a bar: a progress line on stderr at most this often (None: never)
    checkpoint_every: int | None = None  # also checkpoint every N steps inside an epoch (long pretraining epochs)
    # Also checkpoint inside an epoch once this many seconds of it have passed since its start or the
    # last checkpoint, whatever the model: a kill loses at most about this much training. An epoch of
    # ULMFiT on MiniLM over 4,708 e-mails read in windows takes 45-60 min on two CPU cores with a
    # block unfrozen (docs/BENCHMARKS.md, SpamAssassin); its checkpoint (weights and AdamW state) is 170-320 MB.
    # One process only: under torchrun every rank must checkpoint at the same step (`checkpoint_every`).
    # None: only at epoch ends and every `checkpoint_every` steps.
    checkpoint_s: float | None = 600.0
    # The number of the phase's first epoch in seeds, loader orders and the log: 0, or 1 for SiATL,
    # whose schedules (gamma, unfreezing) count epochs from 1 as the paper does.
    first_epoch: int = 0
    log_throughput: bool = True  # train_tokens_per_s in every log line (SiATL's lines never had it)
    # Keep the weights of this (global) epoch and stop after it, instead of selecting on the monitor:
    # the epoch was chosen beforehand by cross-validation (train/crossval.py). None: select on `monitor`.
    select_epoch: int | None = None


@dataclass
class PhaseFiles:
    """Where one phase writes: its resume checkpoint, its best weights, the shared log."""

    folder: Path
    prefix: str  # "lm" or "classifier"
    log_name: str = "history.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoints" / f"{self.prefix}-last.safetensors"  # save_state: no pickle

    @property
    def best(self) -> Path:
        return self.folder / "checkpoints" / f"{self.prefix}-best.safetensors"

    @property
    def log(self) -> Path:
        return self.folder / self.log_name


@dataclass
class PhaseResult:
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    resumed_from: str | None = None
    stopped: bool = False  # early stopping ended the phase
    resumed_meta: dict | None = None  # the `meta` the interrupted run was started with


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    """The torch seed of one epoch of one stage: a resumed run replays the same dropout masks."""
    return (seed * 1_000_003 + stage * 10_007 + epoch * 101) % (2**31)


class GroupStepper:
    """One optimizer over a model's layer groups, lowest first (ULMFiT §3.2-3.3): each stage freezes
    all but its top groups, gives group k the rate lr / lr_factor**(top - k) and follows its schedule
    (one-cycle, slanted triangular or constant) step by step; gradients are clipped over the
    trainable parameters this optimizer updates (a parameter outside it, e.g. a stale gradient on a
    module the task does not train, must not change the clip norm), in the model's parameter order."""

    def __init__(self, optimizer: torch.optim.Optimizer, layer_groups: list, cfg: "LoopConfig"):
        self.optimizer, self.layer_groups, self.cfg = optimizer, layer_groups, cfg
        self.schedule: Schedule | None = None
        self._owned = {id(p) for g in optimizer.param_groups for p in g["params"]}

    def start_stage(self, stage: Stage, steps_per_epoch: int) -> None:
        freeze_to(self.layer_groups, stage.freeze_to)
        lrs = discriminative_lrs(len(self.layer_groups), stage.lr, self.cfg.lr_factor)
        for g in self.optimizer.param_groups:
            g["base_lr"] = lrs[g["layer"]]
        self.schedule = Schedule(kind=stage.schedule, lr_max=stage.lr, pct_start=self.cfg.pct_start,
                                 total_steps=max(1, stage.epochs * steps_per_epoch))

    def start_epoch(self, epoch: int) -> None:
        pass

    def set_step(self, step: int) -> None:
        set_lr_mom(self.optimizer, self.schedule.lr_mult(step), self.schedule.momentum(step))

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, model) -> None:
        if self.cfg.clip:
            params = [p for p in model.parameters() if p.requires_grad and id(p) in self._owned]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.clip)
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d)


def run_phase(
    model,
    task,
    optimizer,
    layer_groups: list | None,
    stages: list[Stage],
    train_loader,
    valid_loader,
    files: PhaseFiles,
    cfg: LoopConfig,
    resume: bool = False,
    callbacks: tuple = (),
    meta: dict | None = None,
) -> PhaseResult:
    """Train `model` through `stages` on the training device (train/device.py); on return the model
    holds the best weights seen, on the CPU.

    `optimizer`: a torch optimizer over `layer_groups` (wrapped in a `GroupStepper`), or a stepper.
    `meta`: stored with the checkpoint and handed back on resume as `result.resumed_meta` (a recipe
    compares its config with the interrupted run's)."""
    if valid_loader is None and cfg.select_epoch is None:
        raise ValueError("run_phase: without a validation loader nothing selects the weights; set LoopConfig.select_epoch")
    stepper = GroupStepper(optimizer, layer_groups, cfg) if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    hooks = (task, *callbacks)
    early = EarlyStopping(cfg.monitor, patience=cfg.patience)
    # The phase's device (train/device.py): the model moves there in place (the optimizer's parameters
    # are the same objects) and back to the CPU at the end; batches move as they are read.
    dev = training_device()
    model.to(dev)
    sync = distributed.PhaseSync(model, train_loader, valid_loader)  # [distributed] no-op in one process
    train_loader, valid_loader = sync.train_loader, sync.valid_loader  # [distributed] this rank's share
    train_loader, valid_loader = on_device(train_loader, dev), on_device(valid_loader, dev)
    result = PhaseResult()
    pos = {"stage": 0, "epoch": 0, "global_epoch": cfg.first_epoch, "batch": 0}
    ckpt, stopped = None, False
    if resume and files.checkpoint.exists():
        ckpt = load_state(files.checkpoint)
        try:
            model.load_state_dict(ckpt["model"])
            stepper.load_state_dict(ckpt["optimizer"])
            early.load_state_dict(ckpt["early"])
            pos = {k: int(ckpt.get(k, 0)) for k in pos}
            result.history = list(ckpt["history"])
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise UlmfitError(f"{files.checkpoint}: does not fit this run ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''}); resume with the same config, or "
                              "delete the checkpoints/ folder and start again without --resume") from None
        if pos["stage"] < len(stages) and pos["epoch"] >= stages[pos["stage"]].epochs:  # saved past a stage's end
            pos.update(stage=pos["stage"] + 1, epoch=0)
        stopped = result.stopped = bool(ckpt.get("stopped"))
        result.resumed_meta = ckpt.get("meta")
        _rewrite_log(files, result.history)
        result.resumed_from = f"stage {pos['stage']} epoch {pos['epoch']}" + (f" batch {pos['batch']}" if pos["batch"] else "")
        _fire(hooks, "on_resume", result)
    else:
        remove(files.best)  # a stale best from an earlier run must not be restored
        _rewrite_log(files, [])  # lines of this phase with no checkpoint behind them (a kill in the first write)
    show_bar = progress.show_bar(cfg.progress) and distributed.is_main()  # [distributed]
    device = dev.type
    precision = training_precision(cfg.precision, device, lstm=any(isinstance(m, torch.nn.LSTM) for m in model.modules()))
    global_epoch = pos["global_epoch"]

    def save_checkpoint(stage_i, epoch_i, batch_i, extra=None):
        save_state({"model": model.state_dict(), "optimizer": stepper.state_dict(),
                           "early": early.state_dict(), "stage": stage_i, "epoch": epoch_i, "batch": batch_i,
                           "global_epoch": global_epoch, "history": result.history, "loop_config": asdict(cfg),
                           "stopped": stopped, "meta": meta, **(extra or {})}, files.checkpoint)

    for s in range(pos["stage"], len(stages)):
        if stopped:
            break
        stage = stages[s]
        steps_per_epoch = len(train_loader)
        stepper.start_stage(stage, steps_per_epoch)
        first_epoch = pos["epoch"] if s == pos["stage"] else 0
        for epoch in range(first_epoch, stage.epochs):
            torch.manual_seed(epoch_seed(cfg.seed, s, epoch + cfg.first_epoch))
            train_loader.set_epoch(global_epoch)
            stepper.start_epoch(global_epoch)
            _fire((task,), "start_epoch", global_epoch)
            model.train()
            t0, total_loss, n_batches, n_tokens = time.perf_counter(), 0.0, 0, 0
            skip = 0
            if ckpt is not None and ckpt.get("batch") and s == pos["stage"] and epoch == pos["epoch"]:
                # Resume inside an epoch: same data order, skip what was done, restore RNG and carried state.
                skip = ckpt["batch"]
                # "running" carries the epoch's time so far (4th item; older checkpoints lack it), so the
                # epoch's seconds and tokens/s describe the whole epoch, not only its resumed part.
                total_loss, n_batches, n_tokens, *elapsed = ckpt["running"]
                t0 -= elapsed[0] if elapsed else 0.0
                torch.set_rng_state(ckpt["rng"])
                set_rng_state(ckpt.get("cuda_rng"), dev)  # a GPU run's dropout masks (none saved by a CPU run)
                if hasattr(task, "load_state_dict"):  # [distributed] this rank's rows
                    task.load_state_dict(to_device(sync.local_task_state(ckpt["task"]), dev))
            ckpt = None
            desc = f"{files.prefix} {stage.name} {epoch + 1}/{stage.epochs}"
            bar = tqdm(train_loader, desc=desc, disable=not show_bar, leave=False, dynamic_ncols=True)
            beat = Heartbeat(desc, steps_per_epoch, None if show_bar or cfg.progress is False or not distributed.is_main()  # [distributed]
                             else cfg.heartbeat_s, start=skip)
            timed = cfg.checkpoint_s is not None and sync.world == 1  # [distributed] by steps only
            last_save = time.perf_counter()
            for i, batch in enumerate(bar):
                if i < skip:
                    continue
                stepper.set_step(epoch * steps_per_epoch + i)
                with autocast(precision, device):
                    loss = task.loss(model, batch)
                stepper.zero_grad()
                step_loss = sync.backward(loss, task, batch)  # [distributed] loss.backward(); global grads and loss
                stepper.step(model)
                total_loss += step_loss
                n_batches += 1
                n_tokens += _batch_tokens(batch)
                if show_bar and i % 10 == 0:
                    bar.set_postfix(loss=f"{total_loss / n_batches:.3f}")
                beat.update(i + 1, total_loss / n_batches, n_tokens)
                due = bool(cfg.checkpoint_every) and (i + 1) % cfg.checkpoint_every == 0
                if (due or timed and time.perf_counter() - last_save >= cfg.checkpoint_s) and i + 1 < steps_per_epoch:
                    last_save = time.perf_counter()
                    running = (total_loss, n_batches, n_tokens, last_save - t0)
                    gpu_rng = rng_state(dev)
                    save_checkpoint(s, epoch, i + 1, {"rng": torch.get_rng_state(), "running": running,
                                                      **({} if gpu_rng is None else {"cuda_rng": gpu_rng}),
                                                      # [distributed] every rank's carried state, one-process layout
                                                      "task": sync.gather_task_state(task.state_dict()) if hasattr(task, "state_dict") else None})
            train_seconds = time.perf_counter() - t0
            metrics = {}
            if valid_loader is not None:  # None: nothing held out (a refit on all rows at a chosen epoch)
                with autocast(precision, device):
                    metrics = task.evaluate(model, valid_loader)
                metrics = sync.reduce_metrics(metrics)  # [distributed] figures of the whole validation set
            n_tokens_all = sync.total(n_tokens)  # [distributed] tokens read by all ranks
            record = {"phase": files.prefix, "stage": stage.name, "epoch": global_epoch,
                      "train_loss": total_loss / max(n_batches, 1),
                      **(task.epoch_record() if hasattr(task, "epoch_record") else {}), **metrics,
                      "lr": stage.lr, "seconds": round(time.perf_counter() - t0, 2)}
            if cfg.log_throughput:
                record["train_tokens_per_s"] = round(n_tokens_all / max(train_seconds, 1e-9), 1)
            if cfg.select_epoch is None:
                improved = early.step(metrics[cfg.monitor], global_epoch)
            else:  # the epoch chosen beforehand: keep its weights
                improved = global_epoch == cfg.select_epoch
                if improved:
                    early.best, early.best_epoch = metrics.get(cfg.monitor), global_epoch
            record["best"] = improved
            if improved:
                save_weights(model.state_dict(), files.best)
            append_jsonl(files.log, record)
            result.history.append(record)
            global_epoch += 1
            stopped = (stage.can_stop_early and early.should_stop if cfg.select_epoch is None
                       else global_epoch > cfg.select_epoch)
            save_checkpoint(s, epoch + 1, 0)  # past a stage's last epoch: the next stage starts at resume
            sync.barrier()  # [distributed] rank 0's files of this epoch are written before anyone reads them
            _fire(hooks, "on_epoch_end", record)
            if stopped:
                result.stopped = True
                _fire(hooks, "on_stop", record)
                break

    result.best_value, result.best_epoch = early.best, early.best_epoch
    if files.best.exists():
        model.load_state_dict(load_weights(files.best))
    sync.barrier()  # [distributed] every rank holds the best weights before rank 0 may remove the file (a CV fold's)
    model.to("cpu")  # what follows the phase (saving, calibration, prediction) is CPU code
    model.eval()
    return result


def _fire(hooks, name: str, *args) -> None:
    """Call `name(*args)` on each hook object that defines it."""
    for h in hooks:
        fn = getattr(h, name, None)
        if fn is not None:
            fn(*args)


def _rewrite_log(files: PhaseFiles, history: list[dict]) -> None:
    """Make the log agree with the checkpoint (see checkpoint.rewrite_phase_log)."""
    rewrite_phase_log(files.log, files.prefix, history)


def _batch_tokens(batch) -> int:
    if isinstance(batch, (tuple, list)):
        return int(batch[0].numel())
    return int(batch.lengths.sum())
