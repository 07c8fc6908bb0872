"""Fine-tune mesh recovery: ``python -m mesh.finetune --backbone ssrstf.pt [--config FILE] [key=value ...]``.

The encoder comes from ``--backbone`` (its architecture and sizes are read from the file; MotionBERT checkpoints
work too; ``--backbone ssrstf.pt`` finds the shipped open encoder ``models/ssrstf.pt``), or is built randomly from
``model.arch`` / ``model.encoder`` without one; ``--init models/ssrstf_mesh.pt`` continues from a whole mesh model
(encoder and head). With no config and no data
paths, the run uses the embedded synthetic data (generated on first use) and says so; ``configs/mesh/pw3d.yaml``
follows the MotionBERT-comparable 3DPW recipe (docs/protocols.md) with model selection on 3DPW's **validation**
split, never the test split.

Training mixes the datasets of ``data.train`` inside each epoch (``weight`` = passes per epoch, ``epochs`` = only
during the first N epochs, as MotionBERT's H36M/COCO warm-ups), with random flips of 2D input and SMPL pose. AdamW
with separate learning rates for backbone and head, optional backbone freezing then linear warm-up, per-epoch decay,
gradient clipping, AMP (bf16/fp16) on GPU, and exact resume (``--resume``) from ``runs/NAME/last.pt``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m mesh.finetune ...`` (DDP; the global batch is
``optim.batch_size * N``, and a run on N ranks sees the same batches as one process with N times the batch).
Outputs in ``runs/NAME/``: ``config.yaml``, ``log.csv``, ``tb/``, ``metrics/epoch_XXX.json``, ``best.pt``,
``last.pt``, ``metrics.json`` (final validation and test of the best checkpoint).
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

from body_models import BodyModelFileError, load_body_model, load_mean_params
from body_models.rotations import pose_to_rotmats
from mesh.data.mesh_data import (
    MeshClips,
    MeshDataError,
    MeshSplit,
    flip_smpl_pose,
    in_box_ray_frame,
    read_mesh_split,
)
from mesh.evaluation.protocol import evaluate_mesh, get_protocol
from mesh.network.checkpoint import load_mesh_model, save_mesh_model
from mesh.network.head import HeadConfig
from mesh.network.losses import LossWeights, loss_preset, mesh_loss, train_vertex_ids
from mesh.network.model import ORIENTATIONS, MeshRecovery, pose_body
from motion.checkpoint import CheckpointError, load_backbone
from motion.config import ConfigError, load_config, to_dict
from motion.data.clips import ClipBatches, batch_lists
from motion.data.transforms import flip_h36m, normalisation_of, normalisation_record
from motion.encoders import build_encoder, count_parameters, set_recompute_blocks, set_recompute_mlp
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
class DataFile:
    path: str | None = None  # null = the synthetic mesh file
    split: str = "train"
    res: list[int] | None = None  # 2D normalisation (w, h); null = the file's meta, else H36M camera sizes
    weight: float = 1.0  # passes over this dataset per epoch (fractions sample without replacement)
    epochs: int | None = None  # use only during the first N epochs (null = always)
    # Hold out every k-th track for validation when a dataset has no validation split (H36M, MotionBERT's 3DPW):
    # 'exclude' them from a training entry, keep 'only' them in the validation entry (same file, split and k).
    holdout_every: int | None = None
    holdout: Literal["exclude", "only"] = "exclude"
    # Keep only the tracks with a frame doing one of these actions (synthetic files: the motion primitive), e.g. a
    # second entry of the same split with actions: [lie] and weight: 2 draws tracks with lying people three times.
    actions: list[str] | None = None


@dataclass
class MeshDataSection:
    train: list[DataFile] = field(default_factory=lambda: [DataFile()])
    validation: DataFile = field(default_factory=lambda: DataFile(split="validation"))
    test: DataFile | None = field(default_factory=lambda: DataFile(split="test"))  # evaluated once, at the end
    synthetic_dir: str = "data/synthetic"
    clip_len: int = 16
    stride: int = 8
    flip: bool = True
    # 2D normalisation: 'auto' = the backbone's (recorded in its file; files without a record used 'image'), or
    # 'track_box' without a backbone; 'track_box' (resolution-free) or 'image' (fixed size per dataset: res / meta).
    norm: Literal["auto", "track_box", "image"] = "auto"


@dataclass
class ModelSection:
    arch: str = "ssrstf"  # used only without --backbone (random initialisation)
    encoder: dict[str, Any] = field(default_factory=lambda: {"variant": "XS"})
    smpl: str | None = None  # body model file/folder; null = $SMPL_MODEL_DIR, else the embedded default
    mean_params: str | None = None  # smpl_mean_params.npz; null = next to the SMPL file, else the fallback
    recompute_blocks: int = 0  # training memory for time: these first encoder blocks recompute activations in backward
    recompute_mlp: bool = False  # training memory for time: every MLP branch recomputes its hidden layer
    # Frame of the predicted global orientation (mesh.network.model.ORIENTATIONS): 'camera', or 'box_ray' (relative
    # to the ray through the track-box centre; needs track_box inputs and cam_intrinsics); 'auto' = the --init
    # model's, else 'camera'.
    orientation: Literal["auto", "camera", "box_ray"] = "auto"


@dataclass
class OptimSection:
    lr_backbone: float = 5e-5
    lr_head: float = 5e-4
    weight_decay: float = 0.01
    lr_decay: float = 0.98  # per epoch
    batch_size: int = 32
    freeze_backbone_epochs: int = 0  # backbone lr 0 for the first N epochs
    backbone_warmup_epochs: int = 0  # then a linear ramp to lr_backbone over N epochs


@dataclass
class EvalSection:
    protocol: str = "motionbert"
    selection: str = "val_mpve_mm"  # validation metric that picks best.pt
    batch_size: int = 32


@dataclass
class FinetuneConfig:
    seed: int = 0
    device: str = "auto"
    amp: AmpMode = "none"
    num_workers: int = 0
    backbone: str | None = None  # encoder checkpoint (--backbone); null = random initialisation
    init: str | None = None  # mesh checkpoint to continue from (--init): its encoder and head; replaces backbone
    model: ModelSection = field(default_factory=ModelSection)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: MeshDataSection = field(default_factory=MeshDataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss_preset: str = "default"  # 'default' or 'motionbert'
    loss: dict[str, float | str] = field(default_factory=dict)  # overrides of the preset's weights
    eval: EvalSection = field(default_factory=EvalSection)
    loop: LoopConfig = field(default_factory=LoopConfig)


def _mean_params_path(cfg: ModelSection, body_source: str) -> str | None:
    if cfg.mean_params is not None:
        return cfg.mean_params
    candidate = Path(body_source).parent / "smpl_mean_params.npz"
    return str(candidate) if candidate.is_file() else None


class MeshTask(Task):
    """Fine-tuning on mixed mesh datasets (see module docstring)."""

    def __init__(self, cfg: FinetuneConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.synthetic = any(f.path is None for f in [*cfg.data.train, cfg.data.validation])
        self.body = load_body_model(cfg.model.smpl, device=env.device)
        self.mean = load_mean_params(_mean_params_path(cfg.model, self.body.source))
        torch.manual_seed(cfg.seed)  # identical head initialisation on every rank
        initial: MeshRecovery | None = None
        if cfg.init is not None:
            if cfg.backbone is not None:
                raise ConfigError("give --init (a mesh model to continue from) or --backbone (an encoder), not both")
            initial, ckpt = load_mesh_model(cfg.init, body=self.body)
            encoder = initial.backbone
            self.arch = ckpt["arch"]
            self.backbone_info = {"path": cfg.init, "arch": self.arch, "init": "mesh model",
                                  "metadata": {k: v for k, v in ckpt.get("metadata", {}).items() if k != "run_config"}}
            backbone_norm = normalisation_of(ckpt.get("metadata", {}))
        elif cfg.backbone is not None:
            encoder, info = load_backbone(cfg.backbone)
            self.arch, self.backbone_info = info.arch, {"path": cfg.backbone, "arch": info.arch,
                                                        "metadata": info.metadata}
            backbone_norm = normalisation_of(info.metadata)
        else:
            encoder = build_encoder(cfg.model.arch, cfg.model.encoder)
            self.arch, self.backbone_info = cfg.model.arch, {"path": None, "arch": cfg.model.arch}
            backbone_norm = "track_box"
        self.norm = backbone_norm if cfg.data.norm == "auto" else cfg.data.norm
        if self.norm != backbone_norm and env.main:
            print(f"warning: data.norm={self.norm} differs from the backbone's {backbone_norm!r} normalisation: the "
                  "encoder will see inputs in another frame than it was pretrained on", file=sys.stderr)
        self.orientation = cfg.model.orientation
        if self.orientation == "auto":
            self.orientation = initial.orientation if initial is not None else "camera"
        if self.orientation not in ORIENTATIONS:
            raise ConfigError(f"model.orientation must be auto or one of {ORIENTATIONS}, got {self.orientation!r}")
        if self.orientation == "box_ray" and self.norm != "track_box":
            raise ConfigError("model.orientation=box_ray needs the track_box 2D normalisation")
        self.train_sets = [MeshClips(self._train_split(f), cfg.data.clip_len, cfg.data.stride)
                           for f in cfg.data.train]
        self.val_split = self._read(cfg.data.validation)
        # The full validation report of the best epoch validated in this process: the final report reuses it
        # instead of evaluating best.pt, the same weights, again.
        self.best_validation: tuple[float, dict[str, Any]] | None = None
        self.test_split = self._read(cfg.data.test) if cfg.data.test is not None else None
        # The detector -> H36M-17 keypoint rule of the data becomes the model's (mesh.infer applies it to users'
        # files): every file must agree. A backbone made on the other rule is fine-tuned onto this one.
        splits = [ds.split for ds in self.train_sets] + [s for s in (self.val_split, self.test_split) if s is not None]
        rules = {s.keypoint_conversion: s.name for s in splits}
        if len(rules) > 1:
            raise ConfigError("the data files were made with different keypoint conversions: "
                              + ", ".join(f"{name}: {rule}" for rule, name in rules.items()))
        self.conversion = next(iter(rules))
        if initial is not None:  # the head comes with the mesh model (its size, its learnt mean pose and shape)
            self.model = initial.to(env.device).train()
        else:
            self.model = MeshRecovery(encoder, self.body, self.mean, cfg.head).to(env.device)
        self.model.orientation = self.orientation  # evaluation turns box_ray predictions back into the camera frame
        self.model.keypoint_conversion = self.conversion
        try:
            set_recompute_blocks(self.model.backbone, cfg.model.recompute_blocks)
            set_recompute_mlp(self.model.backbone, cfg.model.recompute_mlp)
        except ValueError as err:
            raise ConfigError(f"model.{err}") from None
        try:
            self.weights: LossWeights = loss_preset(cfg.loss_preset, **cfg.loss)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"loss_preset / loss: {err} (weights: {sorted(vars(LossWeights()))})") from None
        self.protocol = get_protocol(cfg.eval.protocol, clip_len=cfg.data.clip_len)
        o = cfg.optim
        self.optimizer = adamw([{"params": list(self.model.backbone.parameters()), "lr": o.lr_backbone},
                                {"params": list(self.model.head.parameters()), "lr": o.lr_head}],
                               weight_decay=o.weight_decay)

        def backbone_factor(epoch: int) -> float:
            if epoch < o.freeze_backbone_epochs:
                return 0.0
            ramp = min(1.0, (epoch - o.freeze_backbone_epochs + 1) / o.backbone_warmup_epochs) \
                if o.backbone_warmup_epochs else 1.0
            return ramp * o.lr_decay**epoch

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [backbone_factor, lambda epoch: o.lr_decay**epoch])

    @property
    def selection_key(self) -> str:  # type: ignore[override]
        return self.cfg.eval.selection

    def _read(self, f: DataFile) -> MeshSplit:
        path = f.path
        if path is None:
            from motion.synthetic import ensure_synthetic_data

            path = str(ensure_synthetic_data(Path(self.cfg.data.synthetic_dir))["mesh"])
        split = read_mesh_split(path, f.split, f.res, norm=self.norm)
        if f.holdout_every is not None:
            tracks = list(dict.fromkeys(split.source.tolist()))
            held = np.isin(split.source, tracks[f.holdout_every - 1::f.holdout_every])
            split = split.subset(held if f.holdout == "only" else ~held)
        if f.actions is not None:
            try:
                split = split.tracks_with_actions(f.actions)
            except MeshDataError as err:
                raise ConfigError(f"data actions={f.actions}: {err}") from None
        return split

    def _train_split(self, f: DataFile) -> MeshSplit:
        """A training split, its ground-truth orientation in the model's frame (validation and test stay in the
        camera frame: the evaluator turns the predictions instead)."""
        split = self._read(f)
        if self.orientation == "box_ray":
            try:
                split = in_box_ray_frame(split)
            except MeshDataError as err:
                raise ConfigError(f"model.orientation=box_ray: {err}") from None
        return split

    def _epoch_items(self, epoch: int) -> list[int]:
        """Global clip indices of this epoch (into the concatenation of the training sets), before shuffling."""
        items, offset = [], 0
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
        for f, ds in zip(self.cfg.data.train, self.train_sets, strict=True):
            if f.epochs is None or epoch < f.epochs:
                whole, frac = divmod(f.weight, 1.0)
                picks = list(range(len(ds))) * int(whole)
                picks += torch.randperm(len(ds), generator=g)[: round(frac * len(ds))].tolist()
                items += [offset + i for i in picks]
            offset += len(ds)
        return items

    def num_batches(self, epoch: int) -> int:
        return len(self._epoch_items(epoch)) // self.env.world // self.cfg.optim.batch_size

    def batches(self, epoch: int, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        items = self._epoch_items(epoch)
        order = [items[i] for i in epoch_order(len(items), self.cfg.seed, epoch, self.env.rank, self.env.world)]
        bs = self.cfg.optim.batch_size
        yield from DataLoader(ClipBatches(self.train_sets, batch_lists(order, bs, start_step)), batch_size=None,
                              num_workers=self.cfg.num_workers,
                              generator=torch.Generator())  # its own generator: the global RNG stays untouched

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator
             ) -> tuple[torch.Tensor, dict[str, float]]:
        ((_, compute),) = self.loss_parts(net, batch, gen, 1)
        return compute()

    def loss_parts(self, net: nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator, parts: int
                   ) -> list[LossPart]:
        x, pose, shape = batch["input"], batch["pose"], batch["shape"]
        if self.cfg.data.flip:
            mask = batch_uniform(gen, len(x), self.env.rank, self.env.world) < 0.5
            x = torch.where(mask[:, None, None, None], flip_h36m(x), x)
            pose = torch.where(mask[:, None, None], flip_smpl_pose(pose), pose)
        dev = self.env.device
        # A fresh vertex subset per step from the step's generator (exact resume), the same for pred and gt and for
        # every piece of the batch; the joints stay exact. None = full mesh (train_vertices 0, or edge/normal terms).
        ids = train_vertex_ids(self.weights, self.body.num_vertices, gen)
        ids = None if ids is None else ids.to(dev)

        def compute(part: slice) -> tuple[torch.Tensor, dict[str, float]]:
            # Ground truth from the same body model, batched on the device. A clip whose shape is constant (3DPW,
            # the synthetic data) is blended once and skinned as one block: ~3x faster than per-frame betas.
            clip_shape = shape[part]
            betas = clip_shape[:, 0] if bool((clip_shape == clip_shape[:, :1]).all()) else clip_shape
            with torch.no_grad():
                gt = pose_body(self.body, pose_to_rotmats(pose[part].to(dev)), betas.to(dev), vertex_ids=ids)
            pred = net(x[part].to(dev), vertex_ids=ids)
            return mesh_loss(pred, gt, self.weights, self.body.faces)  # means over clips: pieces add up exactly

        return micro_parts(len(x), parts, compute)

    def evaluate(self, split: MeshSplit) -> dict[str, Any]:
        ev = evaluate_mesh(self.model, split, self.protocol, {"neutral": self.body},
                           batch_size=self.cfg.eval.batch_size, autocast_dtype=amp_dtype(self.cfg.amp))
        return ev.report()

    def validate(self) -> dict[str, float]:
        report = self.evaluate(self.val_split)
        val = {f"val_{k}": v for k, v in report["summary"].items() if k.endswith("_mm") or k == "accel_m_per_s2"}
        score = val[self.selection_key]
        if self.best_validation is None or score < self.best_validation[0]:  # fit's rule for best.pt
            self.best_validation = (score, report)
        return val

    def metadata(self) -> dict[str, Any]:
        return {"task": "mesh fine-tuning", "backbone": self.backbone_info, "synthetic": self.synthetic,
                "normalisation": normalisation_record(self.norm), "orientation": self.orientation,
                "keypoint_conversion": self.conversion, "mean_params": self.mean.source,
                "protocol": self.protocol.name, "run_config": to_dict(self.cfg)}

    def save(self, path: Path, metadata: dict[str, Any], train_state: dict[str, Any] | None) -> None:
        save_mesh_model(path, self.model, self.arch, {**self.metadata(), **metadata}, train_state)


def run(cfg: FinetuneConfig, out: Path, resume: bool) -> dict[str, Any]:
    """Fine-tune, select on validation, then report the best checkpoint on validation (the report made when it was
    validated, unless that was before a resume) and evaluate it once on test."""
    env = DistEnv(cfg.device)
    start_run(env, out, resume, cfg)
    task = MeshTask(cfg, env)
    if env.main:
        label = "the embedded synthetic data (not 3DPW)" if task.synthetic else "the configured datasets"
        start = cfg.backbone or (f"{cfg.init} (mesh model)" if cfg.init else "random initialisation")
        print(f"fine-tuning {task.arch} ({count_parameters(task.model.backbone) / 1e6:.2f}M backbone, "
              f"{count_parameters(task.model.head) / 1e6:.2f}M head) on {label}, device {env.device}, world "
              f"{env.world}; backbone: {start}; body model: {task.body.source}; "
              f"{sum(len(d) for d in task.train_sets)} training clips, {len(task.val_split)} validation frames")
    summary = fit(task, cfg.loop, env, out, cfg.amp, cfg.seed, resume, task.metadata())
    results: dict[str, Any] = {}
    if env.main:
        best, _ = load_mesh_model(out / "best.pt", body=task.body, map_location=env.device)
        task.model.load_state_dict(best.state_dict())
        cached = task.best_validation
        # best.pt was validated in this process (not before a resume) when its score is the best seen here
        same = cached is not None and cached[0] == summary["best"].get(task.selection_key)
        results = {"best_epoch": summary["best"].get("epoch"),
                   "validation": cached[1] if same else task.evaluate(task.val_split), "synthetic": task.synthetic}
        if task.test_split is not None:
            results["test"] = task.evaluate(task.test_split)
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(out / "metrics.json")
        label = " (synthetic data, not 3DPW)" if task.synthetic else ""
        for name in ("validation", "test"):
            if name in results:
                s = results[name]["summary"]
                print(f"{name}{label}, {task.protocol.name} protocol, best epoch {results['best_epoch']}: "
                      f"MPVE {s['mpve_mm']:.1f} mm, MPJPE {s['mpjpe_mm']:.1f} mm, PA-MPJPE {s['pa_mpjpe_mm']:.1f} mm, "
                      f"accel {s['accel_mm_per_frame2']:.1f} mm/frame^2 over {s['frames']} frames")
        print(f"model: {out / 'best.pt'}")
    env.finish()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=None,
                        help="encoder checkpoint (e.g. ssrstf.pt: a bare name is looked up in models/)")
    parser.add_argument("--init", default=None,
                        help="continue from a mesh model (its encoder and head), e.g. models/ssrstf_mesh.pt")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: synthetic quick recipe)")
    parser.add_argument("--name", default=None, help="run name (default: config stem, or 'finetune')")
    parser.add_argument("--out-dir", type=Path, default=Path("runs"))
    parser.add_argument("--resume", action="store_true", help="continue runs/NAME from its last.pt")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. loop.epochs=5")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    try:
        overrides = list(args.overrides) + ([f"backbone={args.backbone}"] if args.backbone else []) \
            + ([f"init={args.init}"] if args.init else [])
        cfg = load_config(FinetuneConfig, args.config, overrides)
        name = args.name or (args.config.stem if args.config else "finetune")
        run(cfg, args.out_dir / name, args.resume)
    except (ConfigError, MeshDataError, CheckpointError, BodyModelFileError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
