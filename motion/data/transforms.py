"""Coordinate maps and augmentations shared by the lifting and mesh pipelines.

Normalisation (ARCHITECTURE.md, mesh_protocol.md §4.6): ``u = x / w * 2 - 1``, ``v = y / w * 2 - h / w`` and, for
depths in pixel units, ``d = z / w * 2``: a fixed image-level map, no per-person crop.
"""

from __future__ import annotations

import numpy as np
import torch

from body_models import H36M17

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
