"""Mesh-recovery training losses (docs/protocols.md, losses), every weight in the config.

Position terms are computed in **millimetres** on pelvis-centred vertices/joints, as MotionBERT does, so that its
weights keep their balance: ``0.5 joints + 10 velocity + 1000 pose + 1 shape + 20 norm`` is the ``motionbert``
preset. The project default adds the vertex loss MotionBERT lacks and regularises body pose and betas only (not the
global orientation, which is near pi in camera frames).

Training poses only a random vertex subset (``LossWeights.train_vertices``, drawn by :func:`train_vertex_ids`): the
vertex term on a uniform subset is an unbiased estimate of the full-mesh mean L1, and the joints stay exact. The
edge and normal terms need the whole mesh, so a non-zero weight for either turns the subset off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from mesh.network.model import MeshOutput
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
    # Not a weight: vertices posed per training step (a fresh uniform subset); 0 = the full mesh. See train_vertex_ids.
    train_vertices: int = 1024


LOSS_PRESETS: dict[str, LossWeights] = {
    "default": LossWeights(),
    "motionbert": LossWeights(vertex=0.0, joints=0.5, velocity=10.0, pose=1000.0, shape=1.0, norm=20.0,
                              norm_scope="all"),
}


def loss_preset(name: str, **overrides: float | int | str) -> LossWeights:
    if name not in LOSS_PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; known: {sorted(LOSS_PRESETS)}")
    return replace(LOSS_PRESETS[name], **overrides)


def train_vertex_ids(w: LossWeights, num_vertices: int, gen: torch.Generator | None = None) -> torch.Tensor | None:
    """The vertices one training step poses: ``w.train_vertices`` ids drawn uniformly without replacement.

    Returns a sorted (K,) int64 CPU tensor (sorted: gathers walk memory in order), or None for the full mesh (when
    ``train_vertices`` is 0 or covers the mesh, or when the edge/normal terms need every face). With a zero vertex
    weight and no mesh term the subset is empty: only the joints are posed. ``gen`` (CPU) makes the draw
    reproducible; pass the same ids to the prediction and the ground truth.
    """
    k = int(w.train_vertices)
    if k < 0:
        raise ValueError(f"train_vertices must be >= 0 (0 = full mesh), got {k}")
    if w.edge or w.normal or k == 0 or k >= num_vertices:
        return None
    if not w.vertex:
        return torch.zeros(0, dtype=torch.long)
    return torch.randperm(num_vertices, generator=gen)[:k].sort().values


def rotation_angle(rotmats: torch.Tensor) -> torch.Tensor:
    """Rotation angle in [0, pi] of rotation matrices ``(..., 3, 3)`` -> ``(...)``, radians: the norm of the
    axis-angle vector, as ``atan2(2 sin, 2 cos)`` (stable at 0 and pi), from the skew part and the trace."""
    r = rotmats
    skew = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    return torch.atan2(skew.norm(dim=-1), r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)


def _edge_lengths(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    return (vertices[..., edges[:, 0], :] - vertices[..., edges[:, 1], :]).norm(dim=-1)


def _face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    tri = vertices[..., faces, :]  # (..., F, 3, 3)
    n = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def mesh_loss(pred: MeshOutput, gt: MeshOutput, w: LossWeights, faces: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms with non-zero weight. ``pred``/``gt``: clips (B, T, ...), metres, root-relative.

    ``pred`` and ``gt`` may hold a vertex subset (``vertex_ids``, the same for both): the vertex term is then the
    mean over the subset, an unbiased estimate of the full-mesh term. Returns ``(total, {term: value})`` (values
    before weighting, for logging).
    """
    if (pred.vertex_ids is None) != (gt.vertex_ids is None) or (
            pred.vertex_ids is not None and not torch.equal(pred.vertex_ids, gt.vertex_ids.to(pred.vertex_ids))):
        raise ValueError("pred and gt must be posed on the same vertices (same vertex_ids, or both full meshes)")
    if (w.edge or w.normal) and pred.vertex_ids is not None:
        raise ValueError("edge/normal losses need the full mesh: pose with vertex_ids=None (train_vertices: 0)")
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
        # |[axis-angle | betas]| = sqrt(sum of squared rotation angles + |betas|^2): only the angles are needed.
        angles = rotation_angle(pred.rotmats)  # (B, T, 24)
        if w.norm_scope == "body":
            angles = angles[..., 1:]
        sq = angles.square().sum(-1) + pred.betas.square().sum(-1)[:, None]  # (B, T)
        terms["norm"] = sq.sqrt().mean()
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
