"""Mesh-recovery metrics as pure functions (docs/protocols.md): per-frame values, the caller averages.

Inputs are tensors ``(..., V, 3)`` / ``(..., J, 3)`` in any unit (the evaluator uses metres and reports mm), already
centred on the protocol's root. Joint-error helpers come from ``motion.metrics`` (one implementation).
"""

from __future__ import annotations

import torch

from body_models import H36M_EVAL_S14, H36M_TO_LSP14
from motion.metrics import mpjpe, pa_mpjpe, similarity_align

__all__ = ["JOINT_SUBSETS", "accel_error", "center", "mpjpe", "mpve", "pa_mpjpe", "pa_mpve"]

# Named H36M-17 subsets: S14 (MotionBERT / Pose2Mesh), LSP-14 order (SPIN / WHAM; same joints), all 17.
JOINT_SUBSETS: dict[str, tuple[int, ...]] = {"s14": H36M_EVAL_S14, "lsp14": H36M_TO_LSP14, "h36m17": tuple(range(17))}
# Mid-hip root: the mean of the two H36M hips (LSP-14 positions 2 and 3).
_HIPS = (1, 4)


def center(points: torch.Tensor, joints_h36m: torch.Tensor, root: str) -> torch.Tensor:
    """Subtract the root from ``points (..., P, 3)``: 'pelvis' = H36M joint 0, 'midhip' = mean of the two hips."""
    if root == "pelvis":
        return points - joints_h36m[..., :1, :]
    if root == "midhip":
        return points - joints_h36m[..., list(_HIPS), :].mean(dim=-2, keepdim=True)
    raise ValueError(f"root must be 'pelvis' or 'midhip', got {root!r}")


def mpve(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-vertex position error (no alignment beyond the caller's centring). ``(..., V, 3) -> (...)``."""
    if pred.shape[-2] != target.shape[-2]:
        raise ValueError(f"vertex counts differ: prediction {pred.shape[-2]}, ground truth {target.shape[-2]} "
                         "(prediction and ground truth must use the same body-model topology)")
    return mpjpe(pred, target)


def pa_mpve(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MPVE after the per-frame similarity transform that best aligns the vertices. ``(..., V, 3) -> (...)``."""
    return mpve(similarity_align(pred, target), target)


def accel_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Acceleration error of one contiguous track: ``(T, J, 3) -> (T - 2,)``, unit per frame².

    ``a_t = p_{t-1} - 2 p_t + p_{t+1}``; mean over joints of ``|a_pred - a_gt|``. Multiply by fps² for unit/s².
    """
    def acc(p: torch.Tensor) -> torch.Tensor:
        return p[..., :-2, :, :] - 2 * p[..., 1:-1, :, :] + p[..., 2:, :, :]

    return (acc(pred) - acc(target)).norm(dim=-1).mean(dim=-1)
