"""Pretrain a motion encoder on 2D->3D pose lifting: ``python -m motion.pretrain --config configs/motion/xs.yaml``.

Data: a lifting pickle in MotionBERT's H36M schema (``data.path``), or the synthetic data (generated on first use)
when ``data.path`` is null. Recipe (docs/encoder.md): clips of T frames (train stride T/3, evaluation stride T),
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
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from motion.checkpoint import CheckpointError, load_backbone, save_backbone
from motion.config import ConfigError, load_config, to_dict
from motion.data.clips import ClipBatches, batch_lists
from motion.data.lifting import LiftingClips, LiftingDataError, LiftingSplit, read_lifting_split
from motion.data.transforms import flip_h36m, normalisation_of, normalisation_record
from motion.encoders import build_encoder, count_parameters, set_recompute_blocks, set_recompute_mlp
from motion.lifting_eval import evaluate_lifting
from motion.metrics import mpjpe, n_mpjpe, velocity_error
from motion.training import (
    AmpMode,
    DistEnv,
    LoopConfig,
    LossPart,
    Task,
    adamw,
    amp_dtype,
    batch_uniform,
    epoch_order,
    fit,
    micro_parts,
    start_run,
)


@dataclass
class ModelSection:
    arch: str = "ssrstf"
    encoder: dict[str, Any] = field(default_factory=lambda: {"variant": "XS"})
    recompute_blocks: int = 0  # training memory for time: these first blocks recompute activations in backward
    recompute_mlp: bool = False  # training memory for time: every MLP branch recomputes its hidden layer
    # Start from this backbone file's weights instead of a random initialisation (continued pretraining); its
    # architecture and encoder config must be the ones above. A mesh model's encoder is exported to a backbone file
    # with ``python -m mesh.network.checkpoint --encoder-of MESH.pt --out FILE.pt``.
    init: str | None = None


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
    # 2D normalisation (recorded in the checkpoint): 'track_box' (a per-track box, resolution-free) or 'image'
    # (MotionBERT's per-camera image size).
    norm: Literal["track_box", "image"] = "track_box"


@dataclass
class OptimSection:
    lr: float = 5e-4
    weight_decay: float = 0.01
    lr_decay: float = 0.99  # multiplied after every epoch
    batch_size: int = 16


@dataclass
class LossSection:
    mpjpe: float = 1.0
    n_mpjpe: float = 0.5
    velocity: float = 20.0


@dataclass
class PretrainConfig:
    seed: int = 0
    device: str = "auto"  # auto = cuda if available, else cpu
    amp: AmpMode = "none"
    eval_batch_size: int = 64
    num_workers: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    loop: LoopConfig = field(default_factory=LoopConfig)


def lifting_loss(pred: torch.Tensor, target: torch.Tensor, weights: LossSection) -> tuple[torch.Tensor, dict]:
    """``w1 MPJPE + w2 N-MPJPE + w3 velocity`` on root-relative normalised poses ``(B, T, 17, 3)``."""
    terms = {"mpjpe": mpjpe(pred, target).mean(), "n_mpjpe": n_mpjpe(pred, target).mean(),
             "velocity": velocity_error(pred, target).mean() if pred.shape[1] > 1 else pred.sum() * 0}
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


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


class LiftingTask(Task):
    """2D->3D lifting on clips of a lifting pickle (see module docstring)."""

    selection_key = "val_p1_mm"

    def __init__(self, cfg: PretrainConfig, env: DistEnv, load_init: bool = True) -> None:
        self.cfg, self.env = cfg, env
        self.data_path = resolve_data_path(cfg.data)
        train_all = read_lifting_split(self.data_path, "train", norm=cfg.data.norm)
        self.train_split, self.val_split = split_validation(train_all, cfg.data.val_every)
        self.test_split = read_lifting_split(self.data_path, "test", norm=cfg.data.norm,
                                             exclude_sources=tuple(cfg.data.exclude_test_sources))
        T = cfg.data.clip_len
        self.train_set = LiftingClips(self.train_split, T, cfg.data.train_stride or max(1, T // 3))
        self.val_set = LiftingClips(self.val_split, T, cfg.data.test_stride or T)
        self.test_set = LiftingClips(self.test_split, T, cfg.data.test_stride or T)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = build_encoder(cfg.model.arch, cfg.model.encoder).to(env.device)
        if cfg.model.init is not None and load_init:
            self.init_from(cfg.model.init)
        try:
            set_recompute_blocks(self.model, cfg.model.recompute_blocks)
            set_recompute_mlp(self.model, cfg.model.recompute_mlp)
        except ValueError as err:
            raise ConfigError(f"model.{err}") from None
        self.optimizer = adamw(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=cfg.optim.lr_decay)

    def init_from(self, path: str) -> None:
        """Load the weights of the backbone file ``path`` (same architecture and encoder config) into the model."""
        start, info = load_backbone(path, map_location=self.env.device)
        if info.arch != self.cfg.model.arch or start.config != self.model.config:
            raise ConfigError(f"model.init: {info.path} holds a '{info.arch}' encoder with config {info.config}, "
                              f"which differs from this run's model.arch / model.encoder")
        try:
            trained = normalisation_of(info.metadata)
        except ValueError as err:
            raise ConfigError(f"model.init: {info.path}: {err}") from None
        if trained != self.cfg.data.norm:
            raise ConfigError(f"model.init: {info.path} was trained with the '{trained}' 2D normalisation, this run "
                              f"uses data.norm={self.cfg.data.norm}")
        self.model.load_state_dict(start.state_dict())

    def num_batches(self, epoch: int) -> int:
        return len(self.train_set) // self.env.world // self.cfg.optim.batch_size

    def batches(self, epoch: int, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        order = epoch_order(len(self.train_set), self.cfg.seed, epoch, self.env.rank, self.env.world)
        bs = self.cfg.optim.batch_size
        # The loader gets its own generator: a new iterator must not draw from the global RNG (exact resume).
        yield from DataLoader(ClipBatches([self.train_set], batch_lists(order, bs, start_step)), batch_size=None,
                              generator=torch.Generator(), num_workers=self.cfg.num_workers)

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator
             ) -> tuple[torch.Tensor, dict[str, float]]:
        ((_, compute),) = self.loss_parts(net, batch, gen, 1)
        return compute()

    def loss_parts(self, net: nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator, parts: int
                   ) -> list[LossPart]:
        x, y = batch["input"], batch["target"]
        if self.cfg.data.flip:
            mask = (batch_uniform(gen, len(x), self.env.rank, self.env.world) < 0.5)[:, None, None, None]
            x, y = torch.where(mask, flip_h36m(x), x), torch.where(mask, flip_h36m(y), y)

        def compute(part: slice) -> tuple[torch.Tensor, dict[str, float]]:
            pred = net(x[part].to(self.env.device))
            return lifting_loss(pred.float(), y[part].to(self.env.device), self.cfg.loss)  # means over clips

        return micro_parts(len(x), parts, compute)

    def evaluate(self, dataset: LiftingClips) -> dict[str, Any]:
        return evaluate_lifting(self.model, dataset, self.env.device, flip_test=self.cfg.data.test_flip,
                                batch_size=self.cfg.eval_batch_size, autocast_dtype=amp_dtype(self.cfg.amp))

    def validate(self) -> dict[str, float]:
        val = self.evaluate(self.val_set)
        return {"val_p1_mm": val["p1_mm"], "val_p2_mm": val["p2_mm"]}

    def save(self, path: Path, metadata: dict[str, Any], train_state: dict[str, Any] | None) -> None:
        meta = {"task": "2d-3d lifting pretraining", "data": str(self.data_path), "clip_len": self.cfg.data.clip_len,
                "normalisation": normalisation_record(self.cfg.data.norm),
                "keypoint_conversion": self.train_split.keypoint_conversion,
                "synthetic": self.cfg.data.path is None, "run_config": to_dict(self.cfg), **metadata}
        save_backbone(path, self.model, self.cfg.model.arch, self.model.config, meta, train_state)


def run(cfg: PretrainConfig, out: Path, resume: bool) -> dict[str, Any]:
    """Train, select by validation, evaluate the best checkpoint on the test split; write ``metrics.json``."""
    env = DistEnv(cfg.device)
    start_run(env, out, resume, cfg)
    # A resumed run takes its weights from last.pt: the model.init file was read when the run began and need not
    # exist any more.
    task = LiftingTask(cfg, env, load_init=not (resume and (out / "last.pt").exists()))
    if env.main:
        label = " (synthetic, not Human3.6M)" if cfg.data.path is None else ""
        print(f"{cfg.model.arch} {count_parameters(task.model) / 1e6:.2f}M params on {env.device}, world size "
              f"{env.world}; data {task.data_path}{label}: {len(task.train_set)} train clips of "
              f"{cfg.data.clip_len}, {len(task.val_split)} validation and {len(task.test_split)} test frames")
    summary = fit(task, cfg.loop, env, out, cfg.amp, cfg.seed, resume)
    results: dict[str, Any] = {}
    if env.main:
        best, _ = load_backbone(out / "best.pt", map_location=env.device)
        task.model.load_state_dict(best.state_dict())
        test = task.evaluate(task.test_set)
        baseline = mean_pose_baseline(task.train_split, task.test_set)
        results = {"test": test, "best_validation": summary["best"], "baseline_mean_pose_p1_mm": baseline,
                   "data": str(task.data_path), "synthetic": cfg.data.path is None}
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(out / "metrics.json")
        label = " (synthetic data, not Human3.6M)" if cfg.data.path is None else ""
        print(f"test{label}: P1 {test['p1_mm']:.1f} mm, P2 {test['p2_mm']:.1f} mm over {test['frames']} frames; "
              f"training-mean-pose baseline P1 {baseline:.1f} mm")
        for act, v in test["per_action"].items():
            print(f"  {act:<24} P1 {v['p1_mm']:7.1f}  P2 {v['p2_mm']:7.1f}  ({v['frames']} frames)")
        print(f"backbone: {out / 'best.pt'}  (fine-tune with: python -m mesh.finetune --backbone {out / 'best.pt'})")
    env.finish()
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
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. loop.epochs=5")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    try:
        cfg = load_config(PretrainConfig, args.config, args.overrides)
        name = args.name or (args.config.stem if args.config else "pretrain")
        run(cfg, args.out_dir / name, args.resume)
    except (ConfigError, LiftingDataError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
