"""Pose-error metrics as pure functions on tensors: per-frame errors, the caller chooses how to average.

All functions take ``(..., J, 3)`` tensors in any unit and return per-frame values ``(...)`` in the same unit.
Procrustes alignment runs in float64 for joint sets (the SVD of a 3x3 cross-covariance is ill-conditioned in float32
for near-planar poses); for mesh vertices only its 3x3 problem does. It returns the input dtype.
"""

from __future__ import annotations

import torch

_FLOAT64_MAX_POINTS = 64  # point sets up to this size are aligned entirely in float64

def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: mean over J of the Euclidean distance. ``(..., J, 3) -> (...)``."""
    return (pred - target).norm(dim=-1).mean(dim=-1)


def similarity_align(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Align ``pred`` to ``target`` per frame with the least-squares similarity (scale, rotation, translation).

    Umeyama's solution: reflections are excluded (det R = +1). ``(..., J, 3) -> (..., J, 3)``.
    """
    # Few points (joints, possibly near-planar): everything in float64. Many points (mesh vertices): the centring and
    # products stay in the input dtype (float64 copies of 500 x 14k x 3 tensors dominated PA-MPVE's time) and only
    # the 3x3 problem is solved in float64; a spread-out cloud of thousands of points is well-conditioned.
    work = torch.float64 if pred.shape[-2] <= _FLOAT64_MAX_POINTS else torch.promote_types(pred.dtype, torch.float32)
    x, y = pred.to(work), target.to(work)
    mu_x, mu_y = x.mean(dim=-2, keepdim=True), y.mean(dim=-2, keepdim=True)
    xc, yc = x - mu_x, y - mu_y
    cov = (xc.transpose(-1, -2) @ yc).double()  # (..., 3, 3)
    u, s, vh = torch.linalg.svd(cov)
    v = vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones_like(s)
    diag[..., -1] = d
    rot = v @ (diag.unsqueeze(-1) * u.transpose(-1, -2))  # R = V D U^T
    var_x = (xc**2).sum(dim=(-1, -2)).double()
    scale = (s * diag).sum(dim=-1) / var_x.clamp_min(1e-12)
    aligned = xc @ (scale[..., None, None] * rot.transpose(-1, -2)).to(work) + mu_y
    return aligned.to(pred.dtype)


def pa_mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MPJPE after per-frame similarity (Procrustes) alignment. ``(..., J, 3) -> (...)``."""
    return mpjpe(similarity_align(pred, target), target)


def n_mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MPJPE after the least-squares per-frame *scale* of ``pred`` (no rotation). ``(..., J, 3) -> (...)``."""
    scale = (pred * target).sum(dim=(-1, -2)) / (pred * pred).sum(dim=(-1, -2)).clamp_min(1e-12)
    return mpjpe(scale[..., None, None] * pred, target)


def velocity_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint error of frame-to-frame velocities: ``(..., T, J, 3) -> (..., T - 1)`` (unit per frame)."""
    return mpjpe(pred.diff(dim=-3), target.diff(dim=-3))
