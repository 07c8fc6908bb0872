"""Coordinate maps and augmentations shared by the lifting and mesh pipelines.

Two 2D normalisations, recorded in every checkpoint (``metadata['normalisation']``):

- ``track_box`` (models trained by this project from generator version 2 on): a per-track box around the person,
  ``u = (x - c_t) / s * 2``, ``v = (y - c_t) / s * 2`` with ``s`` the person's size over the track and ``c_t`` the
  box centre smoothed over time (:func:`track_box`). It does not depend on the video's size or aspect ratio, so
  inference needs no image size, and training and inference compute it with the same function.
- ``image`` (MotionBERT's map, and this project's earlier checkpoints): ``u = x / w * 2 - 1``,
  ``v = y / w * 2 - h / w`` with a fixed image size (w, h) per dataset, and depths ``d = z / w * 2``.
"""

from __future__ import annotations

import numpy as np
import torch

from body_models import H36M17
from motion.data.clips import track_bounds

_FLIP_PERM = list(H36M17.flip_permutation)


def normalize_2d(xy: np.ndarray, width: np.ndarray | float, height: np.ndarray | float) -> np.ndarray:
    """Pixels -> network frame. ``xy (..., 2)``; ``width``/``height`` broadcast against ``xy[..., 0]``. float64."""
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    return np.stack([xy[..., 0] / w * 2 - 1, xy[..., 1] / w * 2 - h / w], axis=-1)


def denormalize_2d(uv: np.ndarray, width: np.ndarray | float, height: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`normalize_2d`."""
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    return np.stack([(uv[..., 0] + 1) * w / 2, (uv[..., 1] + h / w) * w / 2], axis=-1)


def normalize_image_3d(xyz: np.ndarray, width: np.ndarray | float, height: np.ndarray | float) -> np.ndarray:
    """``joint3d_image`` (x, y pixels; z depth offset in pixel scale) -> network frame: x, y as 2D, ``z / w * 2``."""
    w = np.asarray(width, dtype=np.float64)
    return np.concatenate([normalize_2d(xyz[..., :2], width, height), (xyz[..., 2] / w * 2)[..., None]], axis=-1)


def denormalize_image_3d(xyz: np.ndarray, width: np.ndarray | float, height: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`normalize_image_3d` (back to pixel-scale image coordinates)."""
    w = np.asarray(width, dtype=np.float64)
    return np.concatenate([denormalize_2d(xyz[..., :2], width, height), (xyz[..., 2] * w / 2)[..., None]], axis=-1)


def flip_h36m(x: torch.Tensor) -> torch.Tensor:
    """Mirror H36M-17 data across the image's vertical centre line: negate channel 0 (x or u) and swap left/right
    joints. ``(..., 17, C)`` with C >= 1 (2D + confidence, or 3D); other channels are kept."""
    out = x[..., _FLIP_PERM, :].clone()
    out[..., 0] = -out[..., 0]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Resolution-free 2D normalisation: a per-track box around the person.

NORMALISATIONS = ("track_box", "image")
TRACK_BOX_VERSION = 1
BOX_MIN_CONF = 0.3  # joints at least this confident define the person's box
BOX_SIZE_PERCENTILE = 90.0  # the person's size: this percentile of per-frame box sizes over the track
BOX_CENTRE_SIGMA_S = 1.0  # the box centre is smoothed over time with a Gaussian of this width (seconds)


def normalisation_of(metadata: dict | None) -> str:
    """The 2D normalisation a checkpoint was trained with, from its metadata's ``normalisation`` record.

    Files without the record (this project's checkpoints before the record existed, MotionBERT's released files)
    were trained with the image-size map: ``'image'``.
    """
    record = (metadata or {}).get("normalisation")
    kind = record.get("kind") if isinstance(record, dict) else record
    if kind in (None, "image"):
        return "image"
    if kind not in NORMALISATIONS:
        raise ValueError(f"unknown 2D normalisation {kind!r} in the checkpoint (known: {', '.join(NORMALISATIONS)})")
    return str(kind)


def normalisation_record(kind: str, fps: float = 30.0) -> dict[str, object]:
    """The ``normalisation`` entry written into checkpoints trained with ``kind``."""
    if kind == "track_box":
        return track_box_record(fps)
    if kind == "image":
        return {"kind": "image"}
    raise ValueError(f"unknown 2D normalisation {kind!r} (known: {', '.join(NORMALISATIONS)})")


def track_box_record(fps: float = 30.0) -> dict[str, object]:
    """The ``normalisation`` record a checkpoint trained with the track-box map carries."""
    return {"kind": "track_box", "version": TRACK_BOX_VERSION, "min_conf": BOX_MIN_CONF,
            "size_percentile": BOX_SIZE_PERCENTILE, "centre_sigma_s": BOX_CENTRE_SIGMA_S, "fps": fps}


def track_box(xy: np.ndarray, conf: np.ndarray, fps: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(N, 2)`` and scale ``(N,)`` (pixels) of one track's box normalisation.

    Per frame, the box of the joints with confidence >= :data:`BOX_MIN_CONF` (all joints when fewer than 4 are);
    the scale is the :data:`BOX_SIZE_PERCENTILE` th percentile over the track of ``max(box width, box height)`` (one
    number per track: the person's extended size, so a person walking towards the camera still grows), and the centre
    is the box centre smoothed over :data:`BOX_CENTRE_SIGMA_S` seconds (global motion is kept only slowly; the network
    predicts root-relative poses). Neither depends on the image size or aspect ratio.

    Args:
        xy: (N, 17, 2) pixels (finite); conf: (N, 17) in [0, 1].
    """
    from scipy.ndimage import gaussian_filter1d

    xy = np.asarray(xy, dtype=np.float64)
    good = np.asarray(conf) >= BOX_MIN_CONF
    few = good.sum(axis=1) < 4
    good[few] = True
    lo = np.where(good[..., None], xy, np.inf).min(axis=1)
    hi = np.where(good[..., None], xy, -np.inf).max(axis=1)
    size = (hi - lo).max(axis=1)
    scale = max(float(np.percentile(size, BOX_SIZE_PERCENTILE)), 1e-6)
    centre = (lo + hi) / 2
    if len(xy) > 1:
        centre = gaussian_filter1d(centre, sigma=max(BOX_CENTRE_SIGMA_S * fps, 1e-3), axis=0, mode="nearest")
    return centre, np.full(len(xy), scale)


def normalize_box(xy: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Pixels -> track-box frame: ``(xy - centre) / scale * 2`` (the person spans about [-1, 1]).

    ``xy (N, J, 2)``, ``centre (N, 2)``, ``scale (N,)``; float64.
    """
    return (np.asarray(xy, dtype=np.float64) - centre[:, None]) / scale[:, None, None] * 2


def normalize_box_3d(xyz: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``joint3d_image`` (x, y pixels; depth offset in pixel scale) ``(N, J, 3)`` -> track-box frame (depth scaled
    like x and y)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return np.concatenate([normalize_box(xyz[..., :2], centre, scale), (xyz[..., 2] / scale[:, None] * 2)[..., None]],
                          axis=-1)


def track_box_per_frame(xy: np.ndarray, conf: np.ndarray, source: np.ndarray, fps: float = 30.0
                        ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`track_box` for every track of a split: ``xy (N, 17, 2)``, ``conf (N, 17)``, ``source (N,)`` track ids
    -> centre ``(N, 2)``, scale ``(N,)``."""
    centre, scale = np.zeros((len(xy), 2)), np.zeros(len(xy))
    for a, b in track_bounds(source):
        centre[a:b], scale[a:b] = track_box(xy[a:b], conf[a:b], fps)
    return centre, scale
