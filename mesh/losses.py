"""Mesh-recovery training losses (mesh_protocol.md §7), every weight in the config.

Position terms are computed in **millimetres** on pelvis-centred vertices/joints, as MotionBERT does, so that its
weights keep their balance: ``0.5 joints + 10 velocity + 1000 pose + 1 shape + 20 norm`` is the ``motionbert``
preset. The project default adds the vertex loss MotionBERT lacks and regularises body pose and betas only (not the
global orientation, which is near pi in camera frames).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from body_models.rotations import rotmat_to_axis_angle
from mesh.model import MeshOutput
from motion.metrics import mpjpe


@dataclass
class LossWeights:
    vertex: float = 1.0  # L1 on pelvis-centred vertices (mm)
    joints: float = 0.5  # MPJPE over H36M-17, pelvis-centred (mm)
    velocity: float = 10.0  # MPJPE of frame differences (mm / frame)
    acceleration: float = 0.0  # MPJPE of second differences (mm / frame^2)
    pose: float = 1000.0  # L1 between rotation matrices
    shape: float = 1.0  # L1 between betas
    norm: float = 20.0  # mean L2 norm of [axis-angle | betas] over norm_scope
    norm_scope: Literal["all", "body"] = "body"  # 'all' includes the global orientation (MotionBERT)
    edge: float = 0.0  # L1 between mesh edge lengths (mm)
    normal: float = 0.0  # 1 - cos between face normals


LOSS_PRESETS: dict[str, LossWeights] = {
    "default": LossWeights(),
    "motionbert": LossWeights(vertex=0.0, joints=0.5, velocity=10.0, pose=1000.0, shape=1.0, norm=20.0,
                              norm_scope="all"),
}


def loss_preset(name: str, **overrides: float | str) -> LossWeights:
    if name not in LOSS_PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; known: {sorted(LOSS_PRESETS)}")
    return replace(LOSS_PRESETS[name], **overrides)


def _edge_lengths(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    return (vertices[..., edges[:, 0], :] - vertices[..., edges[:, 1], :]).norm(dim=-1)


def _face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    tri = vertices[..., faces, :]  # (..., F, 3, 3)
    n = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def mesh_loss(pred: MeshOutput, gt: MeshOutput, w: LossWeights, faces: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms with non-zero weight. ``pred``/``gt``: clips (B, T, ...), metres, root-relative.

    Returns ``(total, {term: value})`` (values before weighting, for logging).
    """
    terms: dict[str, torch.Tensor] = {}
    pj, gj = pred.joints_h36m * 1000, gt.joints_h36m * 1000
    if w.vertex:
        terms["vertex"] = (pred.vertices - gt.vertices).abs().mean() * 1000
    if w.joints:
        terms["joints"] = mpjpe(pj, gj).mean()
    if w.velocity and pj.shape[1] > 1:
        terms["velocity"] = mpjpe(pj.diff(dim=1), gj.diff(dim=1)).mean()
    if w.acceleration and pj.shape[1] > 2:
        terms["acceleration"] = mpjpe(pj.diff(n=2, dim=1), gj.diff(n=2, dim=1)).mean()
    if w.pose:
        terms["pose"] = (pred.rotmats - gt.rotmats).abs().mean()
    if w.shape:
        gt_betas = gt.betas if gt.betas.dim() == 3 else gt.betas[:, None]
        terms["shape"] = (pred.betas[:, None] - gt_betas).abs().mean()
    if w.norm:
        aa = rotmat_to_axis_angle(pred.rotmats)  # (B, T, 24, 3)
        if w.norm_scope == "body":
            aa = aa[..., 1:, :]
        theta = torch.cat([aa.flatten(-2), pred.betas[:, None].expand(-1, aa.shape[1], -1)], dim=-1)
        terms["norm"] = theta.norm(dim=-1).mean()
    if (w.edge or w.normal) and faces is None:
        raise ValueError("edge/normal losses need the body model's faces")
    if w.edge:
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        terms["edge"] = (_edge_lengths(pred.vertices, edges) - _edge_lengths(gt.vertices, edges)).abs().mean() * 1000
    if w.normal:
        cos = (_face_normals(pred.vertices, faces) * _face_normals(gt.vertices, faces)).sum(dim=-1)
        terms["normal"] = (1 - cos).mean()
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
