"""Pretrain a motion encoder on 2D->3D pose lifting: ``python -m motion.pretrain --config configs/motion/xs.yaml``.

Data: a lifting pickle in MotionBERT's H36M schema (``data.path``), or the synthetic data (generated on first use)
when ``data.path`` is null. Recipe (spec/ssrstf.md §8.1): clips of T frames (train stride T/3, evaluation stride T),
random horizontal flips, root-relative targets, loss ``MPJPE + 0.5 N-MPJPE + 20 velocity``, AdamW with per-epoch lr
decay. Model selection uses a **validation** split held out from the training tracks (never the test split); the test
split is evaluated once, with the best checkpoint, at the end.

Outputs in ``runs/NAME/``: ``config.yaml``, ``log.csv``, TensorBoard events, ``last.pt`` (with optimizer state, for
``--resume``), ``best.pt`` (the backbone to fine-tune from: ``mesh.finetune --backbone runs/NAME/best.pt``) and
``metrics.json``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m motion.pretrain --config ...`` (DDP; NCCL on GPUs, gloo on
CPU); the global batch is ``optim.batch_size * N``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from motion.checkpoint import CheckpointError, load_backbone, read_checkpoint, save_backbone
from motion.config import ConfigError, load_config, save_config, to_dict
from motion.data.lifting import LiftingClips, LiftingDataError, LiftingSplit, read_lifting_split
from motion.data.transforms import flip_h36m
from motion.encoders import build_encoder, count_parameters
from motion.lifting_eval import evaluate_lifting
from motion.metrics import mpjpe, n_mpjpe, velocity_error


@dataclass
class ModelSection:
    arch: str = "ssrstf"
    encoder: dict[str, Any] = field(default_factory=lambda: {"variant": "XS"})


@dataclass
class DataSection:
    path: str | None = None  # lifting pickle; null = synthetic data in synthetic_dir (generated if missing)
    synthetic_dir: str = "data/synthetic"
    clip_len: int = 27
    train_stride: int | None = None  # default clip_len // 3
    test_stride: int | None = None  # default clip_len
    flip: bool = True
    test_flip: bool = True
    val_every: int = 10  # every val_every-th training track is held out for validation (model selection)
    exclude_test_sources: list[str] = field(default_factory=list)  # H36M: the 3 videos MotionBERT skips


@dataclass
class OptimSection:
    lr: float = 5e-4
    weight_decay: float = 0.01
    lr_decay: float = 0.99  # multiplied after every epoch
    batch_size: int = 16
    epochs: int = 60
    grad_clip: float | None = None


@dataclass
class LossSection:
    mpjpe: float = 1.0
    n_mpjpe: float = 0.5
    velocity: float = 20.0


@dataclass
class PretrainConfig:
    seed: int = 0
    device: str = "auto"  # auto = cuda if available, else cpu
    amp: Literal["none", "bf16", "fp16"] = "none"
    max_steps_per_epoch: int | None = None  # cap for quick runs; null = full epochs
    eval_batch_size: int = 64
    num_workers: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)


def lifting_loss(pred: torch.Tensor, target: torch.Tensor, weights: LossSection) -> tuple[torch.Tensor, dict]:
    """``w1 MPJPE + w2 N-MPJPE + w3 velocity`` on root-relative normalised poses ``(B, T, 17, 3)``."""
    terms = {"mpjpe": mpjpe(pred, target).mean(), "n_mpjpe": n_mpjpe(pred, target).mean(),
             "velocity": velocity_error(pred, target).mean() if pred.shape[1] > 1 else pred.sum() * 0}
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return total, {k: float(v) for k, v in terms.items()}


def split_validation(train: LiftingSplit, every: int) -> tuple[LiftingSplit, LiftingSplit]:
    """Hold out every ``every``-th track of the training split (deterministic) as the validation split."""
    tracks = list(dict.fromkeys(train.source.tolist()))
    if len(tracks) < 2:
        raise LiftingDataError(f"need at least 2 training tracks to hold one out for validation, have {len(tracks)}")
    held = set(tracks[every - 1::every]) or {tracks[-1]}
    val_mask = np.isin(train.source, list(held))
    return train.subset(~val_mask), train.subset(val_mask)


def resolve_data_path(cfg: DataSection) -> Path:
    if cfg.path is not None:
        return Path(cfg.path)
    from motion.synthetic import ensure_synthetic_data  # only needed for the embedded default

    return ensure_synthetic_data(Path(cfg.synthetic_dir))["lifting"]


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def _amp_dtype(amp: str) -> torch.dtype | None:
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


class Run:
    """One pretraining run: data, model, optimiser, logs and checkpoints in ``out``."""

    def __init__(self, cfg: PretrainConfig, out: Path, resume: bool) -> None:
        self.cfg, self.out = cfg, out
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _device(cfg.device, local_rank)
        if self.world > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend)
        self.main = self.rank == 0
        if self.main:
            if (out / "last.pt").exists() and not resume:
                raise ConfigError(f"{out} already holds a run (last.pt): pass --resume to continue, or another --name")
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")

        data_path = resolve_data_path(cfg.data)
        train_all = read_lifting_split(data_path, "train")
        self.train_split, self.val_split = split_validation(train_all, cfg.data.val_every)
        self.test_split = read_lifting_split(data_path, "test", exclude_sources=tuple(cfg.data.exclude_test_sources))
        T = cfg.data.clip_len
        self.train_set = LiftingClips(self.train_split, T, cfg.data.train_stride or max(1, T // 3))
        self.val_set = LiftingClips(self.val_split, T, cfg.data.test_stride or T)
        self.test_set = LiftingClips(self.test_split, T, cfg.data.test_stride or T)
        self.data_path = data_path

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = build_encoder(cfg.model.arch, cfg.model.encoder).to(self.device)
        self.encoder_config = self.model.config
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr,
                                           weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=cfg.optim.lr_decay)
        self.scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16" and self.device.type == "cuda")
        self.start_epoch, self.best_val = 0, math.inf
        if resume and (out / "last.pt").exists():
            self._resume(out / "last.pt")
        self.net = DistributedDataParallel(self.model) if self.world > 1 else self.model
        self.writer = None
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"))

    def _resume(self, path: Path) -> None:
        obj = read_checkpoint(path, map_location="cpu")
        state = obj.get("train_state")
        if state is None:
            raise CheckpointError(f"{path}: has no train_state to resume from")
        self.model.load_state_dict(obj["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.best_val = state["epoch"] + 1, state["best_val_p1_mm"]
        if self.main:
            print(f"resuming {path} after epoch {state['epoch']} (best validation P1 {self.best_val:.2f} mm)")

    def _train_order(self, epoch: int) -> list[int]:
        """Shuffled clip order for this epoch and rank: a function of (seed, epoch) only, so a resumed run repeats."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        order = torch.randperm(len(self.train_set), generator=g).tolist()
        per_rank = len(order) // self.world
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.net.train()
        loader = DataLoader(Subset(self.train_set, self._train_order(epoch)), batch_size=cfg.optim.batch_size,
                            shuffle=False, drop_last=True, num_workers=cfg.num_workers)
        steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        flip_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 1)
        amp = _amp_dtype(cfg.amp)
        sums: dict[str, float] = {}
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not self.main, leave=False,
                   dynamic_ncols=True)
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            x, y = batch["input"], batch["target"]
            if cfg.data.flip:
                mask = torch.rand(len(x), generator=flip_gen) < 0.5
                x = torch.where(mask[:, None, None, None], flip_h36m(x), x)
                y = torch.where(mask[:, None, None, None], flip_h36m(y), y)
            x, y = x.to(self.device), y.to(self.device)
            with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
                pred = self.net(x)
            loss, terms = lifting_loss(pred.float(), y, cfg.loss)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for k, v in {"loss": float(loss), **terms}.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.4f}")
            bar.update()
        bar.close()
        return {k: v / max(steps, 1) for k, v in sums.items()}

    def evaluate(self, dataset: LiftingClips) -> dict[str, Any]:
        return evaluate_lifting(self.model, dataset, self.device, flip_test=self.cfg.data.test_flip,
                                batch_size=self.cfg.eval_batch_size, autocast_dtype=_amp_dtype(self.cfg.amp))

    def _log(self, epoch: int, row: dict[str, float]) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        for k, v in row.items():
            if k != "epoch":
                self.writer.add_scalar(k, v, epoch + 1)
        self.writer.flush()

    def _metadata(self, epoch: int, **extra: Any) -> dict[str, Any]:
        return {"task": "2d-3d lifting pretraining", "data": str(self.data_path), "epoch": epoch + 1,
                "clip_len": self.cfg.data.clip_len, "config": to_dict(self.cfg), **extra}

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.main:
            print(f"{cfg.model.arch} {count_parameters(self.model) / 1e6:.2f}M params on {self.device} "
                  f"(world size {self.world}); data {self.data_path}: {len(self.train_set)} train clips, "
                  f"{len(self.val_split)} validation frames, {len(self.test_split)} test frames")
        for epoch in range(self.start_epoch, cfg.optim.epochs):
            start = time.time()
            train = self.train_epoch(epoch)
            self.scheduler.step()
            if self.main:
                val = self.evaluate(self.val_set)
                improved = val["p1_mm"] < self.best_val
                self.best_val = min(self.best_val, val["p1_mm"])
                meta = self._metadata(epoch, val_p1_mm=val["p1_mm"], val_p2_mm=val["p2_mm"])
                if improved:
                    save_backbone(self.out / "best.pt", self.model, cfg.model.arch, self.encoder_config, meta)
                train_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                               "epoch": epoch, "best_val_p1_mm": self.best_val}
                save_backbone(self.out / "last.pt", self.model, cfg.model.arch, self.encoder_config, meta,
                              train_state=train_state)
                self._log(epoch, {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train.items()},
                                  "val_p1_mm": val["p1_mm"], "val_p2_mm": val["p2_mm"],
                                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.time() - start})
                print(f"epoch {epoch + 1}/{cfg.optim.epochs}: loss {train.get('loss', float('nan')):.4f}, "
                      f"validation P1 {val['p1_mm']:.1f} mm, P2 {val['p2_mm']:.1f} mm"
                      f"{' (best)' if improved else ''}, {time.time() - start:.0f} s")
            if self.world > 1:
                dist.barrier()
        results: dict[str, Any] = {}
        if self.main:
            best, _ = load_backbone(self.out / "best.pt", map_location=self.device)
            self.model.load_state_dict(best.state_dict())
            test = self.evaluate(self.test_set)
            baseline = mean_pose_baseline(self.train_split, self.test_set)
            results = {"test": test, "best_val_p1_mm": self.best_val, "baseline_mean_pose_p1_mm": baseline,
                       "data": str(self.data_path), "synthetic": self.cfg.data.path is None}
            tmp = self.out / "metrics.json.tmp"
            tmp.write_text(json.dumps(results, indent=2))
            tmp.replace(self.out / "metrics.json")
            label = " (synthetic data, not Human3.6M)" if self.cfg.data.path is None else ""
            print(f"test{label}: P1 {test['p1_mm']:.1f} mm, P2 {test['p2_mm']:.1f} mm over {test['frames']} frames; "
                  f"training-mean-pose baseline P1 {baseline:.1f} mm")
            for act, v in test["per_action"].items():
                print(f"  {act:<24} P1 {v['p1_mm']:7.1f}  P2 {v['p2_mm']:7.1f}  ({v['frames']} frames)")
            print(f"backbone: {self.out / 'best.pt'}")
            self.writer.close()
        return results


def mean_pose_baseline(train: LiftingSplit, test_set: LiftingClips) -> float:
    """P1 (mm, no flip) of always predicting the training split's mean root-relative pose: the trivial baseline."""
    mean = (train.targets - train.targets[:, :1]).mean(axis=0)
    split = test_set.split
    pred = torch.from_numpy(np.broadcast_to(mean, split.targets.shape).astype(np.float64))
    scale = torch.from_numpy(split.width / 2 * split.factor)[:, None, None]
    gt = torch.from_numpy(split.target_mm - split.target_mm[:, :1])
    per_frame = mpjpe(pred * scale, gt).numpy()
    actions = split.action if (split.action != "").any() else np.full(len(split), "all")
    return float(np.mean([per_frame[actions == a].mean() for a in set(actions.tolist())]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m motion.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: built-in XS defaults)")
    parser.add_argument("--name", default=None, help="run name (default: the config file's stem)")
    parser.add_argument("--out-dir", type=Path, default=Path("runs"))
    parser.add_argument("--resume", action="store_true", help="continue runs/NAME from its last.pt")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. optim.epochs=5")
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        cfg = load_config(PretrainConfig, args.config, args.overrides)
        name = args.name or (args.config.stem if args.config else "pretrain")
        run = Run(cfg, args.out_dir / name, args.resume)
        run.fit()
    except (ConfigError, LiftingDataError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if distributed:
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # gloo sometimes aborts in its exit handlers after a finished run; skip them
    return 0


if __name__ == "__main__":
    sys.exit(main())
