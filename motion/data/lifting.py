"""The 2D->3D lifting data: MotionBERT's H36M pickle schema (``h36m_sh_conf_cam_source_final.pkl``) and clips of it.

Schema (docs/encoder.md, pretraining): ``{'train': {...}, 'test': {...}}`` of per-frame arrays: ``joint_2d`` (N, 17, 2)
pixels, ``confidence`` (N, 17[, 1]) (absent in the CPN file: 1), ``joint3d_image`` (N, 17, 3), ``joints_2.5d_image``
(N, 17, 3) mm, ``2.5d_factor`` (N,), ``camera_name`` (N,), ``source`` (N,), ``action`` (N,). The synthetic generator
writes the same schema, with its camera sizes in a top-level ``meta`` entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from body_models import safe_load_pickle
from body_models.joint_sets import keypoint_conversion_of
from motion.data.checks import check_finite, require_per_frame
from motion.data.clips import clip_indices
from motion.data.transforms import (
    NORMALISATIONS,
    normalize_2d,
    normalize_box,
    normalize_box_3d,
    normalize_image_3d,
    track_box_per_frame,
)

# Human3.6M camera image sizes (w, h), as used by MotionBERT's reader.
H36M_CAMERA_SIZES: dict[str, tuple[int, int]] = {
    "54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000), "60457274": (1000, 1002),
}
# Test videos that the reference evaluation skips (bad ground truth in the released data).
H36M_EXCLUDED_TEST = ("s_09_act_05_subact_02", "s_09_act_10_subact_02", "s_09_act_13_subact_01")


class LiftingDataError(ValueError):
    """A lifting data file is missing, malformed, or has NaN/inf: the message names the file, key, track, frame."""


@dataclass
class LiftingSplit:
    """One split, per frame (N frames), ready for the network.

    Attributes:
        inputs: (N, 17, 3) float32 normalised (u, v, confidence).
        targets: (N, 17, 3) float32 normalised 3D (image-plane x, y; depth offset), not yet root-relative.
        target_mm: (N, 17, 3) float64 ``joints_2.5d_image`` in mm (evaluation target).
        factor: (N,) ``2.5d_factor``: denormalised pixel units -> mm.
        width, height: (N,) pixels per two normalised units (the image size for ``image``, the box size for
            ``track_box``): ``pred * width / 2 * factor`` is in mm.
        source: (N,) track id; action: (N,) action name ('' when unknown).
    """

    inputs: np.ndarray
    targets: np.ndarray
    target_mm: np.ndarray
    factor: np.ndarray
    width: np.ndarray
    height: np.ndarray
    source: np.ndarray
    action: np.ndarray
    keypoint_conversion: str = "midpoint"  # the file's detector -> H36M-17 rule (meta; absent = midpoint)

    def __len__(self) -> int:
        return len(self.source)

    def subset(self, keep: np.ndarray) -> LiftingSplit:
        return LiftingSplit(**{k: v[keep] if isinstance(v, np.ndarray) else v for k, v in vars(self).items()})


def read_lifting_split(path: str | Path, split: str, camera_sizes: dict[str, tuple[int, int]] | None = None,
                       exclude_sources: tuple[str, ...] = (), norm: str = "image") -> LiftingSplit:
    """Read and validate one split of a lifting pickle (through the restricted unpickler).

    Args:
        camera_sizes: image (w, h) per camera name; default: the file's ``meta['camera_sizes']``, else H36M's.
        exclude_sources: track-id prefixes to drop (``H36M_EXCLUDED_TEST`` for the reference H36M evaluation).
        norm: 2D normalisation, ``'image'`` (per-camera image size) or ``'track_box'`` (see motion.data.transforms).
    """
    if norm not in NORMALISATIONS:
        raise LiftingDataError(f"norm must be one of {NORMALISATIONS}, got {norm!r}")
    path = Path(path)
    try:
        data = safe_load_pickle(path)
    except Exception as err:
        raise LiftingDataError(str(err)) from None
    if not isinstance(data, dict) or split not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise LiftingDataError(f"{path}: no '{split}' split (found {keys})")
    where = f"{path} [{split}]"
    raw = data[split]
    try:
        conversion = keypoint_conversion_of(data.get("meta"))
    except ValueError as err:
        raise LiftingDataError(f"{path}: meta: {err}") from None
    j2d = require_per_frame(raw, "joint_2d", (17, 2), where, LiftingDataError)
    n = len(j2d)
    j3d = require_per_frame(raw, "joint3d_image", (17, 3), where, LiftingDataError)
    mm = require_per_frame(raw, "joints_2.5d_image", (17, 3), where, LiftingDataError)
    factor = np.asarray(raw.get("2.5d_factor", np.ones(n)), dtype=np.float64).reshape(-1)
    conf = np.asarray(raw["confidence"], dtype=np.float64) if "confidence" in raw else np.ones((n, 17))
    conf = conf.reshape(n, 17) if conf.size == n * 17 else conf
    if conf.shape != (n, 17):
        raise LiftingDataError(f"{where}: 'confidence' has shape {conf.shape}, expected (N, 17) or (N, 17, 1)")
    for key in ("source", "camera_name"):
        if key not in raw:
            raise LiftingDataError(f"{where}: missing key '{key}' (expected (N,) strings)")
    source = np.asarray(raw["source"]).astype(str)
    cams = np.asarray(raw["camera_name"]).astype(str)
    action = np.asarray(raw["action"]).astype(str) if "action" in raw else np.full(n, "", dtype="<U1")
    for key, arr in (("joint3d_image", j3d), ("joints_2.5d_image", mm), ("2.5d_factor", factor), ("source", source),
                     ("camera_name", cams), ("action", action), ("confidence", conf)):
        if len(arr) != n:
            raise LiftingDataError(f"{where}: '{key}' has {len(arr)} frames, 'joint_2d' has {n}")
    for key, arr in (("joint_2d", j2d), ("confidence", conf), ("joint3d_image", j3d), ("joints_2.5d_image", mm),
                     ("2.5d_factor", factor)):
        check_finite(np.asarray(arr, dtype=np.float64), key, source, where, LiftingDataError)

    sizes = camera_sizes or (data.get("meta", {}) or {}).get("camera_sizes") or H36M_CAMERA_SIZES
    unknown = sorted(set(cams) - set(sizes))
    if unknown:
        raise LiftingDataError(f"{where}: no image size for camera(s) {unknown[:5]} (known: {sorted(sizes)[:8]})")
    width = np.array([sizes[c][0] for c in cams], dtype=np.float64)
    height = np.array([sizes[c][1] for c in cams], dtype=np.float64)
    conf = np.clip(conf, 0.0, 1.0)
    if norm == "track_box":
        fps = float((data.get("meta", {}) or {}).get("fps", 30.0))
        centre, scale = track_box_per_frame(j2d, conf, source, fps)
        uv, targets = normalize_box(j2d, centre, scale), normalize_box_3d(j3d, centre, scale)
        width = height = scale
    else:
        uv = normalize_2d(j2d, width[:, None], height[:, None])
        targets = normalize_image_3d(j3d, width[:, None], height[:, None])
    out = LiftingSplit(
        inputs=np.concatenate([uv, conf[..., None]], axis=-1).astype(np.float32), targets=targets.astype(np.float32),
        target_mm=mm.astype(np.float64), factor=factor, width=width, height=height, source=source, action=action,
        keypoint_conversion=conversion,
    )
    if exclude_sources:
        keep = ~np.array([any(s.startswith(e) for e in exclude_sources) for s in source])
        out = out.subset(keep)
    return out


class LiftingClips(Dataset):
    """Clips of a :class:`LiftingSplit`: ``{'input': (T, 17, 3), 'target': (T, 17, 3) root-relative,
    'index': (T,) frame indices}``. Flip augmentation is applied by the trainer on whole batches."""

    def __init__(self, split: LiftingSplit, clip_len: int, stride: int) -> None:
        self.split = split
        self.clips = clip_indices(split.source, clip_len, stride)

    def __len__(self) -> int:
        return len(self.clips)

    def gather(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """The clips ``clips`` (indices) as arrays with a leading batch axis, in one index per array."""
        idx = self.clips[clips]
        target = self.split.targets[idx]
        return {"input": self.split.inputs[idx], "target": target - target[..., :1, :], "index": idx}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v[0]) for k, v in self.gather(np.array([i])).items()}
