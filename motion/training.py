"""The one training loop, shared by ``motion.pretrain`` and ``mesh.finetune``.

A trainer supplies a :class:`Task` (model, optimiser, batches, loss, validation, checkpoint writing); :func:`fit` runs
epochs with AMP, gradient clipping, micro-batches (gradient accumulation within a step), per-epoch lr decay,
validation-based model selection, CSV + TensorBoard logs, a progress bar, and checkpoints that resume **exactly**:
``last.pt`` is written atomically at the end of every epoch and every ``checkpoint_every`` steps, and holds the
optimiser, scheduler, grad-scaler and RNG states plus the position in the epoch. Batch order and augmentation draws
are pure functions of (seed, epoch, step), so a run killed mid-epoch and resumed finishes with the same weights and
metrics as an uninterrupted one.

Distributed: launched with ``torchrun``, :class:`DistEnv` initialises the process group (NCCL on GPUs, gloo on CPU);
each rank takes its share of every epoch's order, DDP averages gradients, rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import csv
import ctypes
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from motion.checkpoint import CheckpointError, load_state_strict, read_checkpoint
from motion.config import ConfigError, save_config

AmpMode = Literal["none", "bf16", "fp16"]


@dataclass
class LoopConfig:
    """Loop settings (a section of every trainer's config)."""

    epochs: int = 60
    grad_clip: float | None = None  # max gradient norm; null = no clipping
    max_steps_per_epoch: int | None = None  # cap for quick runs; null = full epochs
    checkpoint_every: int = 0  # also write last.pt every N steps (0 = only at epoch ends)
    # Safety stop for a run on a lent machine: end the epoch in progress (validate, save) once this many minutes of
    # this process's training have passed, and stop. The schedule is cut short: runs meant to be reproduced size
    # their epochs instead (scripts/train_open_models.py). null = no limit.
    time_limit_min: float | None = None
    # Memory: compute each step's loss and backward in this many pieces of the batch, one after the other, and take
    # one optimiser step on their summed gradient. Same gradient as the whole batch (random draws are made once per
    # step), about 1/N of the activation memory, about the same time.
    micro_batches: int = 1
    # glibc's malloc: 'tuned' keeps one step's freed memory for the next instead of handing it back to the kernel
    # and faulting it in again (tune_malloc); steadier and faster CPU steps with micro_batches or recomputation.
    malloc: Literal["default", "tuned"] = "default"


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap between steps instead of returning it to the kernel and faulting it in again.

    glibc serves blocks above a *dynamic* threshold (128 KiB at start, rising to the largest block freed so far, at
    most 32 MiB) with their own ``mmap``, and trims the heap top past twice that threshold; every page handed back
    is zero-filled on its next use (a minor fault). Fixing the threshold at 32 MiB and the trim threshold at 2 GiB
    keeps the memory of one step for the next. Measured on SSR-STF-B at batch 32 x 16 (subset path,
    ``benchmarks/train_step.py --malloc tuned``): no effect on whole-batch training, which reaches a fault-free steady
    state by the third step anyway; with the batch in 5 micro-batches, median step 8.48 s against 9.05 s, system time
    0.24 against 1.8 s per step, 9.8k against 70k minor faults per step, the same peak RSS (2.86 GB); with all 16
    encoder blocks recomputed, faults 18k against 197k per step and peak RSS 2.7 against 3.1 GB. The settings apply
    to later allocations: :func:`fit` calls this (``loop.malloc=tuned``) before its first step. Returns False where
    ``mallopt`` is unavailable (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's malloc.h
    return all(libc.mallopt(key, value) == 1 for key, value in
               ((m_mmap_threshold, 32 << 20), (m_trim_threshold, (1 << 31) - 1), (m_top_pad, 64 << 20)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' = the local CUDA device when there is one, else the CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def amp_dtype(mode: AmpMode) -> torch.dtype | None:
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


class DistEnv:
    """World size and rank from torchrun's environment; initialises and tears down the process group."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_name, self.local_rank)
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def finish(self) -> None:
        """Tear down; in a distributed run, exit the process right away (gloo sometimes aborts in exit handlers)."""
        if self.world > 1:
            dist.destroy_process_group()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's share of a shuffled order of ``n`` items, a pure function of (seed, epoch).

    Shares are strided (rank r takes items r, r + world, ...), so step k of a run on ``world`` ranks with batch b
    sees exactly the items of step k of a single-process run with batch ``world * b``.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    share = n // world
    return order[rank::world][:share]


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator for one step's augmentation draws: resuming at (epoch, step) redraws the same numbers."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step)


def batch_uniform(gen: torch.Generator, n: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """``n`` uniform draws for this rank's part of the global batch: the same numbers, sample for sample, that a
    single-process run draws for the same items (see :func:`epoch_order`)."""
    return torch.rand(n * world, generator=gen)[rank::world]


def adamw(params: Any, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with the fused (one-kernel) update on CPU and CUDA: 4.6x faster than the default per-tensor update for
    SSR-STF-B + head on 2 CPU cores (0.04 vs 0.17 s per step), and the GPU's per-parameter kernels go too."""
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    return torch.optim.AdamW(groups, fused=fused or None, **kwargs)


LossPart = tuple[float, Callable[[], tuple[torch.Tensor, dict[str, float]]]]


def micro_parts(n: int, parts: int, compute: Callable[[slice], tuple[torch.Tensor, dict[str, float]]]
                ) -> list[LossPart]:
    """``(share, compute)`` pairs for :meth:`Task.loss_parts`: ``compute(piece)`` on each of :func:`micro_slices`,
    its share of the batch's ``n`` clips as the weight (exact for losses that are means over clips)."""
    return [((p.stop - p.start) / n, partial(compute, p)) for p in micro_slices(n, parts)]


def micro_slices(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering ``range(n)``, sizes differing by at most one (fewer if ``n < parts``)."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in pairwise(bounds) if b > a]


class Task(ABC):
    """What a trainer supplies to :func:`fit`."""

    model: nn.Module  # the bare model (unwrapped); fit wraps it in DDP when distributed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped once per epoch
    selection_key: str  # validation metric used to pick best.pt (lower is better)

    @abstractmethod
    def num_batches(self, epoch: int) -> int:
        """Batches this rank runs in ``epoch`` (before ``max_steps_per_epoch``)."""

    @abstractmethod
    def batches(self, epoch: int, start_step: int) -> Iterator[Any]:
        """This rank's batches of ``epoch`` from ``start_step`` on, deterministic in (seed, epoch)."""

    @abstractmethod
    def loss(self, net: nn.Module, batch: Any, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of one batch (``net`` may be the DDP wrapper); ``gen`` drives augmentation."""

    def loss_parts(self, net: nn.Module, batch: Any, gen: torch.Generator, parts: int) -> list[LossPart]:
        """The step's loss in pieces of the batch: ``(share, compute)`` pairs whose share-weighted losses sum to
        :meth:`loss` of the whole batch. :func:`fit` computes and backpropagates one piece at a time
        (``loop.micro_batches``), so only one piece's activations are alive. Random draws (augmentation, vertex
        subsets) must be made here, once for the whole batch. The default cannot split."""
        if parts != 1:
            raise ConfigError(f"loop.micro_batches: {type(self).__name__} cannot split its batches (use 1)")
        return [(1.0, lambda: self.loss(net, batch, gen))]

    @abstractmethod
    def validate(self) -> dict[str, float]:
        """Validation metrics (rank 0 only); must contain ``selection_key``."""

    @abstractmethod
    def save(self, path: Path, metadata: dict[str, Any], train_state: dict[str, Any] | None) -> None:
        """Write a checkpoint of ``self.model`` atomically (with ``train_state`` for last.pt)."""

    def load_for_resume(self, path: Path) -> dict[str, Any]:
        """Load the model weights of ``path`` into ``self.model`` and return its ``train_state``."""
        obj = read_checkpoint(path)
        if "train_state" not in obj:
            raise CheckpointError(f"{path}: has no train_state to resume from")
        load_state_strict(self.model, obj["state_dict"])
        return obj["train_state"]


def start_run(env: DistEnv, out: Path, resume: bool, config: Any) -> None:
    """Rank 0: refuse to overwrite an existing run unless resuming, create ``out``, write the resolved config."""
    if not env.main:
        return
    if (out / "last.pt").exists() and not resume:
        raise ConfigError(f"{out} already holds a run (last.pt): pass --resume to continue, or another --name")
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")


class RunLog:
    """``log.csv`` (one row per epoch) and TensorBoard scalars in the run folder."""

    def __init__(self, out: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # import here: TensorBoard is slow to import

        self.csv = out / "log.csv"
        self.tb = SummaryWriter(str(out / "tb"))

    def epoch(self, row: dict[str, float]) -> None:
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        for key, value in row.items():
            if key != "epoch":
                self.tb.add_scalar(key, value, int(row["epoch"]))
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _any_rank(env: DistEnv, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (ranks must agree on when to stop)."""
    if env.world == 1:
        return flag
    packed = torch.tensor([float(flag)], device=env.device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())


def fit(task: Task, loop: LoopConfig, env: DistEnv, out: Path, amp: AmpMode, seed: int, resume: bool,
        metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``task`` for ``loop.epochs``; return ``{'best': {...validation metrics...}, 'epochs_run': n}``.

    Files (rank 0): ``last.pt`` (resumable), ``best.pt`` (best ``task.selection_key``), ``log.csv``, ``tb/``.
    """
    if loop.micro_batches < 1:
        raise ConfigError(f"loop.micro_batches must be >= 1, got {loop.micro_batches}")
    if loop.malloc == "tuned" and not tune_malloc():
        raise ConfigError("loop.malloc=tuned needs glibc's mallopt (not found here): use loop.malloc=default")
    dtype = amp_dtype(amp)
    device_type = next(task.model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type, enabled=amp == "fp16" and device_type == "cuda")
    pos = {"epoch": 0, "step": 0, "best": math.inf, "sums": {}, "best_metrics": {}}
    if resume and (out / "last.pt").exists():
        state = task.load_for_resume(out / "last.pt")
        task.optimizer.load_state_dict(state["optimizer"])
        task.scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        pos = state["position"]
        if env.main:
            print(f"resuming {out / 'last.pt'} at epoch {pos['epoch'] + 1}, step {pos['step']}")
    net = DistributedDataParallel(task.model) if env.world > 1 else task.model
    log = RunLog(out) if env.main else None
    meta = metadata or {}

    def train_state() -> dict[str, Any]:
        return {"optimizer": task.optimizer.state_dict(), "scheduler": task.scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": _rng_state(), "position": pos}

    run_start, out_of_time = time.time(), False
    for epoch in range(pos["epoch"], loop.epochs):
        start = time.time()
        train_seconds = 0.0
        steps = task.num_batches(epoch)
        if loop.max_steps_per_epoch is not None:
            steps = min(steps, loop.max_steps_per_epoch)
        net.train()
        bar = tqdm(total=steps, initial=pos["step"], desc=f"epoch {epoch + 1}/{loop.epochs}", leave=False,
                   disable=not env.main, dynamic_ncols=True)
        step_start, steady_start, steady_from = time.time(), None, pos["step"] + 3
        for step, batch in enumerate(task.batches(epoch, pos["step"]), start=pos["step"]):
            if step >= steps:
                break
            if loop.time_limit_min is not None and _any_rank(env, time.time() - run_start > 60 * loop.time_limit_min):
                out_of_time = True
                break
            parts = task.loss_parts(net, batch, step_generator(seed, epoch, step), loop.micro_batches)
            task.optimizer.zero_grad(set_to_none=True)
            step_loss, terms = 0.0, {}
            for i, (share, compute) in enumerate(parts):
                with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                    loss, part_terms = compute()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch + 1}, step {step}")
                # DDP all-reduces the gradients once, after the last piece.
                last = i == len(parts) - 1
                with nullcontext() if env.world == 1 or last else net.no_sync():
                    scaler.scale(loss if len(parts) == 1 else loss * share).backward()
                step_loss += share * float(loss.detach())
                for key, value in part_terms.items():
                    terms[key] = terms.get(key, 0.0) + share * value
            if loop.grad_clip:
                scaler.unscale_(task.optimizer)
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), loop.grad_clip)
            scaler.step(task.optimizer)
            scaler.update()
            for key, value in {"loss": step_loss, **terms}.items():
                pos["sums"][key] = pos["sums"].get(key, 0.0) + value
            pos["step"] = step + 1
            if pos["step"] == steady_from:  # the first steps carry warm-up (loader start, allocator, kernels)
                steady_start = time.time()
            bar.set_postfix(loss=f"{pos['sums']['loss'] / pos['step']:.4f}")
            bar.update()
            if loop.checkpoint_every and pos["step"] % loop.checkpoint_every == 0 and pos["step"] < steps and env.main:
                task.save(out / "last.pt", {**meta, "epoch": epoch, "step": pos["step"]}, train_state())
        bar.close()
        train_seconds = time.time() - step_start
        steady_steps = pos["step"] - steady_from
        step_seconds = (time.time() - steady_start) / steady_steps if steady_start and steady_steps > 0 else math.nan
        if pos["step"] > 0:  # an epoch without steps (loop.max_steps_per_epoch=0: evaluate only) keeps the schedule
            task.scheduler.step()
        sums = pos["sums"]
        if env.world > 1:  # log the global mean over all ranks' batches, as a single process would see it
            keys = sorted(sums)
            packed = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
            dist.all_reduce(packed)
            sums = {k: float(v) / env.world for k, v in zip(keys, packed, strict=True)}
        train_means = {f"train_{k}": v / max(pos["step"], 1) for k, v in sums.items()}
        pos.update(epoch=epoch + 1, step=0, sums={})
        if env.main:
            val = task.validate()
            score = val[task.selection_key]
            improved = score < pos["best"]
            if improved:
                pos["best"], pos["best_metrics"] = score, {**val, "epoch": epoch + 1}
                task.save(out / "best.pt", {**meta, "epoch": epoch + 1, **val}, None)
            task.save(out / "last.pt", {**meta, "epoch": epoch + 1, **val}, train_state())
            log.epoch({"epoch": epoch + 1, **train_means, **val, "lr": task.optimizer.param_groups[0]["lr"],
                       "seconds": round(time.time() - start, 2), "train_seconds": round(train_seconds, 3),
                       "steps": steps, "step_seconds": round(step_seconds, 4)})
            shown = ", ".join(f"{k} {v:.2f}" for k, v in val.items())
            print(f"epoch {epoch + 1}/{loop.epochs}: loss {train_means.get('train_loss', float('nan')):.4f}, "
                  f"{shown}{' (best)' if improved else ''}, {time.time() - start:.0f} s", flush=True)
        env.barrier()
        if out_of_time:
            if env.main:
                print(f"stopped after epoch {epoch + 1}: loop.time_limit_min={loop.time_limit_min} reached",
                      flush=True)
            break
    if log is not None:
        log.close()
    return {"best": pos["best_metrics"], "epochs_run": pos["epoch"], "stopped_by_time_limit": out_of_time}
